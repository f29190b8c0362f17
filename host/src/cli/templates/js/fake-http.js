// A fake of the host's `http.send`: it keeps what was sent and answers from
// `replies`, in order.
export const sent = [];
export const replies = [];
export function send(request) {
  sent.push(request);
  return replies.shift();
}
