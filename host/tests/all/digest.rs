//! The Digest module against a real server: Apache httpd's mod_auth_digest,
//! started from a throwaway configuration on a free port of 127.0.0.2 (the
//! loopback address test hosts allow, so `auth.rs` reuses it end to end).

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use md5::{Digest as _, Md5};
use reqwest::StatusCode;
use switchyard::sandbox::digest::{self, Algorithm};

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";
const REALM: &str = "switchyard-test";
pub const USER: &str = "connector";
// A space and a comma, so nothing depends on the password being a token.
pub const PASSWORD: &str = "open, sesame";
/// The content of `/private/secret.txt`, behind Digest.
pub const SECRET: &str = "the files are in the computer\n";

/// An `apache2 -X` child serving one tempdir; killed when dropped.
pub struct Apache {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Drop for Apache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Apache {
    pub fn start() -> Apache {
        assert!(
            Path::new(APACHE).exists(),
            "apache2 is not installed; ./dev test installs it"
        );
        // Another process may take the port between our probe and Apache's
        // bind; then Apache exits and we try again elsewhere.
        let mut failures = Vec::new();
        for _ in 0..5 {
            let dir = site();
            let addr = free_port();
            let conf = dir.path().join("httpd.conf");
            std::fs::write(&conf, config(dir.path(), addr)).unwrap();
            let child = Command::new(APACHE)
                .arg("-X")
                .arg("-f")
                .arg(&conf)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("apache2 starts");
            let mut apache = Apache { child, addr, dir };
            match apache.wait_ready(Duration::from_secs(20)) {
                Ok(()) => return apache,
                Err(why) => failures.push(why),
            }
        }
        panic!("apache2 did not start: {failures:#?}");
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.error_log()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "not listening after {limit:?}: {}",
                    self.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn url(&self, target: &str) -> String {
        format!("http://{}{target}", self.addr)
    }

    /// `http://127.0.0.2:<port>`, for a connection's `base_url`.
    pub fn origin(&self) -> String {
        self.url("")
    }
}

/// A document root with the protected file, and the user file.
fn site() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("htdocs/private")).unwrap();
    std::fs::write(dir.path().join("htdocs/private/secret.txt"), SECRET).unwrap();
    // The htdigest format: user:realm:MD5(user:realm:password).
    let ha1 = hex::encode(Md5::digest(format!("{USER}:{REALM}:{PASSWORD}")));
    std::fs::write(dir.path().join("users"), format!("{USER}:{REALM}:{ha1}\n")).unwrap();
    dir
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.2:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// A configuration that reads nothing of the system's: every path is in
/// `dir`, and only the modules Digest needs are loaded.
fn config(dir: &Path, addr: SocketAddr) -> String {
    let dir = dir.display();
    let modules: String = [
        ("mpm_event_module", "mod_mpm_event.so"),
        ("authn_core_module", "mod_authn_core.so"),
        ("authn_file_module", "mod_authn_file.so"),
        ("authz_core_module", "mod_authz_core.so"),
        ("authz_user_module", "mod_authz_user.so"),
        ("auth_digest_module", "mod_auth_digest.so"),
    ]
    .iter()
    .map(|(name, file)| format!("LoadModule {name} {MODULES}/{file}\n"))
    .collect();
    format!(
        r#"ServerRoot "{dir}"
ServerName 127.0.0.2
Listen {addr}
PidFile "{dir}/httpd.pid"
ErrorLog "{dir}/error.log"
LogLevel warn
DefaultRuntimeDir "{dir}"
# File locks in the tempdir rather than SysV semaphores, which a killed
# process would leak.
Mutex file:{dir} default
{modules}
DocumentRoot "{dir}/htdocs"
<Directory "{dir}/htdocs">
    Require all granted
</Directory>
<Location /private/>
    AuthType Digest
    AuthName "{REALM}"
    AuthDigestDomain /private/
    AuthDigestProvider file
    AuthUserFile "{dir}/users"
    # Makes Apache send an opaque and refuse a nonce count it has seen, so
    # the test shows that both are handled, not merely ignored.
    AuthDigestNcCheck On
    Require valid-user
</Location>
"#
    )
}

fn challenges(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all(reqwest::header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().expect("ASCII challenge").to_string())
        .collect()
}

async fn get(
    client: &reqwest::Client,
    apache: &Apache,
    target: &str,
    authorization: Option<String>,
) -> reqwest::Response {
    let mut request = client.get(apache.url(target));
    if let Some(value) = authorization {
        request = request.header(reqwest::header::AUTHORIZATION, value);
    }
    request.send().await.expect("apache answers")
}

#[tokio::test]
async fn apache_mod_auth_digest_accepts_our_answers() {
    let apache = Apache::start();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let target = "/private/secret.txt";

    let first = get(&client, &apache, target, None).await;
    assert_eq!(first.status(), StatusCode::UNAUTHORIZED);
    let offered = challenges(&first);
    assert!(
        offered.iter().any(|c| c.starts_with("Digest ")),
        "{offered:?}"
    );
    let offered: Vec<&str> = offered.iter().map(String::as_str).collect();
    let challenge = digest::parse_challenges(&offered).expect("a usable challenge");
    // What Apache 2.4 really offers: MD5 with qop=auth, and (with the nonce
    // count checked) an opaque naming the client slot.
    assert_eq!(challenge.realm, REALM);
    assert_eq!(challenge.algorithm, Algorithm::Md5, "{offered:?}");
    assert!(challenge.qop_auth, "{offered:?}");
    assert!(challenge.opaque.is_some(), "{offered:?}");
    assert!(!challenge.stale && !challenge.userhash, "{offered:?}");

    let answer = |target: &str, password: &str, nc: u32| {
        Some(digest::authorization(
            &challenge,
            "GET",
            target,
            USER,
            password,
            nc,
            &digest::new_cnonce(),
        ))
    };
    let ok = get(&client, &apache, target, answer(target, PASSWORD, 1)).await;
    assert_eq!(ok.status(), StatusCode::OK, "{}", apache.error_log());
    assert_eq!(ok.text().await.unwrap(), SECRET);

    // The same nonce again with the next count, as the sandbox does.
    let again = get(&client, &apache, target, answer(target, PASSWORD, 2)).await;
    assert_eq!(again.status(), StatusCode::OK, "{}", apache.error_log());
    assert_eq!(again.text().await.unwrap(), SECRET);

    // The request-target includes the query, and Apache checks it.
    let with_query = "/private/secret.txt?a=b%20c";
    let query = get(
        &client,
        &apache,
        with_query,
        answer(with_query, PASSWORD, 3),
    )
    .await;
    assert_eq!(query.status(), StatusCode::OK, "{}", apache.error_log());

    // A replayed count is refused: the counts above were really checked.
    let replay = get(&client, &apache, target, answer(target, PASSWORD, 3)).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);

    let wrong = get(&client, &apache, target, answer(target, "wrong", 4)).await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let renewed: Vec<String> = challenges(&wrong);
    let renewed: Vec<&str> = renewed.iter().map(String::as_str).collect();
    assert!(digest::parse_challenges(&renewed).is_some(), "{renewed:?}");

    // Apache's Digest has no SHA-256: an answer computed with it is refused.
    let sha = digest::Challenge {
        algorithm: Algorithm::Sha256,
        ..challenge.clone()
    };
    let sha_answer = digest::authorization(
        &sha,
        "GET",
        target,
        USER,
        PASSWORD,
        5,
        &digest::new_cnonce(),
    );
    let refused = get(&client, &apache, target, Some(sha_answer)).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}
