//! Alert email over plain SMTP (RFC 5321), for integrity incidents when `[alerts] smtp` is set:
//! EHLO, MAIL FROM, RCPT TO per recipient, DATA, QUIT, each reply checked. Meant for the
//! institution's relay on a trusted network (no TLS or AUTH yet).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// Reads one SMTP reply (possibly multi-line) and checks its code class.
async fn reply<R: tokio::io::AsyncBufRead + Unpin>(r: &mut R, want: char) -> Result<(), String> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await.map_err(|e| e.to_string())? == 0 {
            return Err("the SMTP server closed the connection".into());
        }
        if line.len() < 4 || !line.starts_with(want) {
            return Err(format!("the SMTP server answered {:?}", line.trim_end()));
        }
        if line.as_bytes()[3] == b' ' {
            return Ok(());
        }
    }
}

/// Sends one plain-text message.
pub async fn send(
    server: &str,
    from: &str,
    to: &[String],
    subject: &str,
    body: &str,
) -> Result<(), String> {
    if to.is_empty() {
        return Ok(());
    }
    for a in to.iter().chain([&from.to_owned()]) {
        if a.contains(['\r', '\n', '<', '>']) || !a.contains('@') {
            return Err(format!("`{a}` is not an email address"));
        }
    }
    let s = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::TcpStream::connect(server),
    )
    .await
    .map_err(|_| format!("SMTP server {server} did not answer"))?
    .map_err(|e| format!("SMTP server {server}: {e}"))?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::new(r);
    reply(&mut r, '2').await?;
    w.write_all(b"EHLO airlock\r\n")
        .await
        .map_err(|e| e.to_string())?;
    reply(&mut r, '2').await?;
    w.write_all((format!("MAIL FROM:<{from}>\r\n")).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    reply(&mut r, '2').await?;
    for a in to {
        w.write_all((format!("RCPT TO:<{a}>\r\n")).as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        reply(&mut r, '2').await?;
    }
    w.write_all(b"DATA\r\n").await.map_err(|e| e.to_string())?;
    reply(&mut r, '3').await?;
    let subject = subject.replace(['\r', '\n'], " ");
    let mut msg = format!(
        "From: {from}\r\nTo: {}\r\nSubject: {subject}\r\nDate: {}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        to.join(", "),
        chrono::Utc::now().to_rfc2822()
    );
    for line in body.lines() {
        // Dot-stuffing (RFC 5321 §4.5.2).
        if line.starts_with('.') {
            msg.push('.');
        }
        msg.push_str(line);
        msg.push_str("\r\n");
    }
    msg.push_str(".\r\n");
    w.write_all((msg).as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    reply(&mut r, '2').await?;
    w.write_all(b"QUIT\r\n").await.map_err(|e| e.to_string())?;
    Ok(())
}
