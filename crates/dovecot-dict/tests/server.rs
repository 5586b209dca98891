//! The dict server over real unix sockets and in-memory streams.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dovecot_dict::{
    Change, DictError, DictHandler, IterateFlags, ServerLimits, SocketOptions, Transaction, bind,
    serve, serve_connection,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio_util::sync::CancellationToken;

/// An in-memory dict: lookups read the map, commits apply changes to it.
#[derive(Default)]
struct MemoryDict {
    entries: Mutex<BTreeMap<String, String>>,
    commits: Mutex<Vec<Transaction>>,
}

impl MemoryDict {
    fn with(entries: &[(&str, &str)]) -> Self {
        let dict = Self::default();
        if let Ok(mut map) = dict.entries.lock() {
            for (key, value) in entries {
                map.insert((*key).to_owned(), (*value).to_owned());
            }
        }
        dict
    }
}

impl DictHandler for MemoryDict {
    async fn lookup(&self, key: &str, user: &str) -> Result<Option<String>, DictError> {
        match key {
            "shared/fail" => Err(DictError::new("backend down")),
            "shared/panic" => panic!("handler bug"),
            "shared/whoami" => Ok(Some(user.to_owned())),
            "shared/slow" => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(Some("slow".into()))
            }
            _ => Ok(self
                .entries
                .lock()
                .ok()
                .and_then(|map| map.get(key).cloned())),
        }
    }

    async fn iterate(
        &self,
        path: &str,
        _flags: IterateFlags,
        _user: &str,
    ) -> Result<Vec<(String, String)>, DictError> {
        if path == "shared/fail/" {
            return Err(DictError::new("cannot list"));
        }
        let map = self
            .entries
            .lock()
            .map_err(|_| DictError::new("poisoned"))?;
        Ok(map
            .range(path.to_owned()..)
            .take_while(|(key, _)| key.starts_with(path))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    async fn commit(&self, transaction: Transaction) -> Result<(), DictError> {
        if transaction
            .changes
            .iter()
            .any(|change| matches!(change, Change::Set { key, .. } if key == "shared/readonly"))
        {
            return Err(DictError::new("read-only key"));
        }
        let mut map = self
            .entries
            .lock()
            .map_err(|_| DictError::new("poisoned"))?;
        for change in &transaction.changes {
            match change {
                Change::Set { key, value } => {
                    map.insert(key.clone(), value.clone());
                }
                Change::Unset { key } => {
                    map.remove(key);
                }
                Change::Append { .. } | Change::AtomicInc { .. } => {}
            }
        }
        drop(map);
        self.commits
            .lock()
            .map_err(|_| DictError::new("poisoned"))?
            .push(transaction);
        Ok(())
    }
}

/// Runs `input` through one in-memory connection and returns everything
/// the server wrote before closing.
async fn transcript(handler: &MemoryDict, input: &[u8]) -> String {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let limits = ServerLimits::default();
    let serving = serve_connection(server, handler, &limits, CancellationToken::new());
    let talking = async {
        client.write_all(input).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let mut out = String::new();
        client.read_to_string(&mut out).await.expect("read");
        out
    };
    let ((), out) = tokio::join!(serving, talking);
    out
}

#[tokio::test]
async fn lookups_answer_value_not_found_and_failure() {
    let dict = MemoryDict::with(&[("shared/userdb/a@x", "{\"home\":\"/a\"}")]);
    let out = transcript(
        &dict,
        b"H3\t2\t0\thello-user\tauth\n\
          Lshared/userdb/a@x\t\n\
          Lshared/userdb/b@x\t\n\
          Lshared/fail\t\n\
          Lshared/whoami\t\n\
          Lshared/whoami\tother\n",
    )
    .await;
    assert_eq!(
        out,
        "O{\"home\":\"/a\"}\nN\nFbackend down\nOhello-user\nOother\n"
    );
}

#[tokio::test]
async fn iteration_rows_end_with_an_empty_line() {
    let dict = MemoryDict::with(&[
        ("shared/userdb/a@x", "1"),
        ("shared/userdb/b@x", "2\t2"),
        ("shared/other", "3"),
    ]);
    let out = transcript(
        &dict,
        b"I0\t0\tshared/userdb/\t\nI8\t0\tshared/userdb/\t\nI0\t1\tshared/userdb/\t\nI0\t0\tshared/fail/\t\nI0\t0\tshared/none/\t\n",
    )
    .await;
    assert_eq!(
        out,
        "Oshared/userdb/a@x\t1\nOshared/userdb/b@x\t2\u{1}t2\n\n\
         Oshared/userdb/a@x\t\nOshared/userdb/b@x\t\n\n\
         Oshared/userdb/a@x\t1\n\n\
         F\n\
         \n"
    );
}

#[tokio::test]
async fn transactions_apply_on_commit_only() {
    let dict = MemoryDict::with(&[("shared/gone", "x")]);
    let out = transcript(
        &dict,
        b"H3\t2\t0\t\tlastlogin\n\
          B1\tuser@x\n\
          B2\t\n\
          S1\tshared/last-login/user@x\t1700000000\n\
          S2\tshared/discarded\t1\n\
          U1\tshared/gone\n\
          T1\t1700000000\t0\n\
          R2\n\
          Lshared/last-login/user@x\t\n\
          C1\n\
          Lshared/last-login/user@x\t\n\
          Lshared/gone\t\n\
          Lshared/discarded\t\n\
          B3\t\nS3\tshared/readonly\t1\nC3\n\
          C99\n\
          B4\t\nS4\tshared/async\t1\nD4\n",
    )
    .await;
    assert_eq!(out, "N\nO1\nO1700000000\nN\nN\nF3\nF99\nAO4\n");
    let commits = dict.commits.lock().expect("lock");
    assert_eq!(commits.len(), 2);
    let first = commits.first().expect("one commit");
    assert_eq!(first.user, "user@x");
    assert_eq!(
        first.changes,
        [
            Change::Set {
                key: "shared/last-login/user@x".into(),
                value: "1700000000".into()
            },
            Change::Unset {
                key: "shared/gone".into()
            },
        ]
    );
}

#[tokio::test]
async fn transaction_ids_are_per_connection() {
    let dict = MemoryDict::default();
    let first = transcript(&dict, b"B1\t\nS1\tshared/a\t1\nC1\n").await;
    let second = transcript(&dict, b"B1\t\nS1\tshared/b\t2\nC1\n").await;
    assert_eq!((first.as_str(), second.as_str()), ("O1\n", "O1\n"));
    // A transaction opened on one connection is unknown on another.
    let third = transcript(&dict, b"C1\n").await;
    assert_eq!(third, "F1\n");
}

#[tokio::test]
async fn oversized_transaction_fails_instead_of_applying_partially() {
    let dict = MemoryDict::default();
    let mut input = b"B1\t\n".to_vec();
    for i in 0..10_001 {
        input.extend_from_slice(format!("S1\tshared/k{i}\tv\n").as_bytes());
    }
    input.extend_from_slice(b"C1\nLshared/k0\t\n");
    let out = transcript(&dict, &input).await;
    assert_eq!(out, "F1\nN\n");
}

#[tokio::test]
async fn transactions_are_bounded_by_bytes_too() {
    let dict = MemoryDict::default();
    // Two transactions of 40 values of 60 KiB: together over the 1 MiB a
    // connection may hold; the one that crosses it fails, the other
    // commits, and a third fits again once the second is gone.
    let big = "v".repeat(60 * 1024);
    let mut input = b"B1\t\nB2\t\n".to_vec();
    for i in 0..10 {
        input.extend_from_slice(format!("S1\tshared/a{i}\t{big}\n").as_bytes());
    }
    for i in 0..20 {
        input.extend_from_slice(format!("S2\tshared/b{i}\t{big}\n").as_bytes());
    }
    input.extend_from_slice(b"C2\nC1\nB3\t\nS3\tshared/c\tsmall\nC3\n");
    let out = transcript(&dict, &input).await;
    assert_eq!(out, "F2\nO1\nO3\n");
    let committed = dict.commits.lock().expect("lock");
    let sizes: Vec<usize> = committed.iter().map(|t| t.changes.len()).collect();
    assert_eq!(sizes, [10, 1]);
}

#[tokio::test]
async fn malformed_commands_that_expect_a_reply_get_f() {
    let dict = MemoryDict::with(&[("shared/a", "1")]);
    let out = transcript(&dict, b"Lbad\x01\nL\xff\xfe\t\nI0\tx\tpath\nLshared/a\t\n").await;
    assert_eq!(
        out,
        "Fmalformed 'L' command: bad escape sequence\n\
         Fmalformed 'L' command: not UTF-8\n\
         Fmalformed 'I' command: bad row limit\n\
         O1\n"
    );
}

#[tokio::test]
async fn protocol_violations_close_the_connection() {
    let dict = MemoryDict::with(&[("shared/a", "1")]);
    let cases: [&[u8]; 8] = [
        b"X1\nLshared/a\t\n",
        b"\nLshared/a\t\n",
        b"S9\tk\tv\nLshared/a\t\n",
        b"B1\t\nB1\t\nLshared/a\t\n",
        b"R5\nLshared/a\t\n",
        b"H9\t0\t0\t\tauth\nLshared/a\t\n",
        b"S1\t\xff\nLshared/a\t\n",
        b"Bx\nLshared/a\t\n",
    ];
    for input in cases {
        let out = transcript(&dict, input).await;
        assert_eq!(out, "", "{:?}", String::from_utf8_lossy(input));
    }
}

#[tokio::test]
async fn overlong_line_closes_the_connection() {
    let dict = MemoryDict::with(&[("shared/a", "1")]);
    let mut input = b"Lshared/a\t\nL".to_vec();
    input.extend(std::iter::repeat_n(b'x', 70 * 1024));
    input.extend_from_slice(b"\nLshared/a\t\n");
    let out = transcript(&dict, &input).await;
    assert_eq!(out, "O1\n");
}

fn start_server(dir: &Path, handler: Arc<MemoryDict>) -> (std::path::PathBuf, CancellationToken) {
    let path = dir.join("dict.sock");
    let listener = bind(&path, SocketOptions::default()).expect("bind");
    let stop = CancellationToken::new();
    let shutdown = stop.clone();
    tokio::spawn(async move {
        serve(listener, handler, ServerLimits::default(), async move {
            shutdown.cancelled().await;
        })
        .await;
    });
    (path, stop)
}

async fn request(stream: &mut BufReader<UnixStream>, line: &str) -> String {
    stream
        .get_mut()
        .write_all(line.as_bytes())
        .await
        .expect("write");
    let mut reply = String::new();
    stream.read_line(&mut reply).await.expect("read");
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_concurrent_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let entries: Vec<(String, String)> = (0..100)
        .map(|i| (format!("shared/k{i}"), format!("v{i}")))
        .collect();
    let dict = MemoryDict::default();
    if let Ok(mut map) = dict.entries.lock() {
        map.extend(entries);
    }
    let (path, stop) = start_server(dir.path(), Arc::new(dict));

    let mut clients = tokio::task::JoinSet::new();
    for client in 0..3000 {
        let path = path.clone();
        clients.spawn(async move {
            let stream = UnixStream::connect(&path).await.expect("connect");
            let mut stream = BufReader::new(stream);
            stream
                .get_mut()
                .write_all(b"H3\t2\t0\t\tauth\n")
                .await
                .expect("hello");
            for round in 0..3 {
                let i = (client + round) % 100;
                let reply = request(&mut stream, &format!("Lshared/k{i}\t\n")).await;
                assert_eq!(reply, format!("Ov{i}\n"));
            }
            // Hold the connection until every client is connected.
            stream
        });
    }
    let mut open = Vec::new();
    while let Some(result) = clients.join_next().await {
        open.push(result.expect("client task"));
    }
    assert_eq!(open.len(), 3000);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, stop) = start_server(dir.path(), Arc::new(MemoryDict::with(&[("shared/a", "1")])));
    let mut stream = UnixStream::connect(&path).await.expect("connect");
    let mut batch = String::new();
    let mut expected = String::new();
    for i in 0..500 {
        if i % 2 == 0 {
            batch.push_str("Lshared/slow\t\n");
            expected.push_str("Oslow\n");
        } else {
            batch.push_str("Lshared/a\t\n");
            expected.push_str("O1\n");
        }
        if i == 10 {
            batch.push_str("Lshared/missing\t\n");
            expected.push_str("N\n");
        }
    }
    stream.write_all(batch.as_bytes()).await.expect("write");
    let mut got = vec![0; expected.len()];
    stream.read_exact(&mut got).await.expect("read");
    assert_eq!(String::from_utf8_lossy(&got), expected);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_connection_does_not_disturb_the_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, stop) = start_server(dir.path(), Arc::new(MemoryDict::with(&[("shared/a", "1")])));

    // A handler panic ends only its own connection.
    let mut panicking = UnixStream::connect(&path).await.expect("connect");
    panicking
        .write_all(b"Lshared/panic\t\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), panicking.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Garbage and a client that vanishes mid-line.
    let mut garbage = UnixStream::connect(&path).await.expect("connect");
    garbage
        .write_all(b"\x00\x01\x02 not a command\n")
        .await
        .expect("write");
    let mut vanishing = UnixStream::connect(&path).await.expect("connect");
    vanishing.write_all(b"Lshared/a").await.expect("write");
    drop(vanishing);

    let mut healthy = BufReader::new(UnixStream::connect(&path).await.expect("connect"));
    assert_eq!(request(&mut healthy, "Lshared/a\t\n").await, "O1\n");
    stop.cancel();
}

#[tokio::test]
async fn bind_replaces_stale_socket_and_sets_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sub/dict.sock");
    let first = bind(&path, SocketOptions::default()).expect("first bind");
    drop(first); // leaves the socket file behind, as a crash would
    assert!(path.exists());
    let options = SocketOptions {
        mode: 0o666,
        ..SocketOptions::default()
    };
    let _second = bind(&path, options).expect("stale socket replaced");
    let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
}

#[tokio::test]
async fn bind_refuses_a_live_socket_or_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("dict.sock");
    let _live = bind(&path, SocketOptions::default()).expect("bind");
    let err = bind(&path, SocketOptions::default()).expect_err("in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "keep me").expect("write");
    let err = bind(&file, SocketOptions::default()).expect_err("not a socket");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
}
