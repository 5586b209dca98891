use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Reads one (possibly multi-line) SMTP reply and returns its code and
/// full text.
async fn read_reply<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<(u16, String)> {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await? == 0 {
            bail!("connection closed; reply so far: {text:?}");
        }
        text.push_str(&line);
        let code = line
            .get(..3)
            .and_then(|code| code.parse::<u16>().ok())
            .with_context(|| format!("malformed SMTP reply line {line:?}"))?;
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok((code, text));
        }
    }
}

/// Sends one message over plain SMTP to 127.0.0.1:`port` and returns the
/// server's reply to the end of DATA. Any unexpected reply is an error
/// naming the command. `message` uses LF or CRLF line endings; lines
/// starting with a dot are stuffed.
pub async fn send_mail(port: u16, from: &str, to: &[&str], message: &str) -> Result<String> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut stream = BufReader::new(stream);
    let expect = |step: &str, (code, text): (u16, String), want: u16| {
        if code == want {
            Ok(text)
        } else {
            bail!("{step}: expected {want}, got {text:?}")
        }
    };
    expect("greeting", read_reply(&mut stream).await?, 220)?;
    let command =
        async |stream: &mut BufReader<TcpStream>, line: String| -> Result<(u16, String)> {
            stream.get_mut().write_all(line.as_bytes()).await?;
            read_reply(stream).await
        };
    expect(
        "EHLO",
        command(&mut stream, "EHLO test.localhost\r\n".into()).await?,
        250,
    )?;
    expect(
        "MAIL",
        command(&mut stream, format!("MAIL FROM:<{from}>\r\n")).await?,
        250,
    )?;
    for rcpt in to {
        expect(
            "RCPT",
            command(&mut stream, format!("RCPT TO:<{rcpt}>\r\n")).await?,
            250,
        )?;
    }
    expect("DATA", command(&mut stream, "DATA\r\n".into()).await?, 354)?;
    let mut body = String::with_capacity(message.len() + 64);
    for line in message.lines() {
        if line.starts_with('.') {
            body.push('.');
        }
        body.push_str(line);
        body.push_str("\r\n");
    }
    body.push_str(".\r\n");
    let done = expect("end of DATA", command(&mut stream, body).await?, 250)?;
    let _ = command(&mut stream, "QUIT\r\n".into()).await;
    Ok(done)
}
