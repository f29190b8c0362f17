// The host's `http.send`, answering from `replies` (an `Error` is thrown, as
// the bindings throw an `err`) and keeping what was sent.
export const sent = [];
export const replies = [];
export function send(request) {
  sent.push(request);
  const reply = replies.shift();
  if (reply instanceof Error) {
    throw reply;
  }
  return reply;
}
