//! The smallest HTTP/2 client that can misbehave: a frame encoder (9-byte header + payload),
//! a frame reader, and HPACK blocks built from the static table only.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Instant, timeout};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const CANCEL: u32 = 0x8;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = payload.len() as u32;
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// `GET / ` on `http://t`: indexed :method GET, :scheme http, :path /, and :authority as a
/// literal without indexing (the dynamic table stays empty, so blocks can be reused).
pub const GET_BLOCK: &[u8] = &[0x82, 0x86, 0x84, 0x01, 0x01, b't'];

/// A block h2 decodes and then refuses as malformed (a connection-specific header), which
/// makes the server reset the stream with PROTOCOL_ERROR: a "local error reset".
pub fn malformed_block() -> Vec<u8> {
    let mut block = GET_BLOCK.to_vec();
    block.push(0x00);
    block.push(10);
    block.extend_from_slice(b"connection");
    block.push(5);
    block.extend_from_slice(b"close");
    block
}

/// The connection preface and an empty SETTINGS frame.
pub fn hello() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    out
}

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A GOAWAY's error code.
    pub fn goaway_code(&self) -> Option<u32> {
        (self.kind == GOAWAY && self.payload.len() >= 8)
            .then(|| u32::from_be_bytes(self.payload[4..8].try_into().unwrap()))
    }

    pub fn goaway_debug(&self) -> String {
        String::from_utf8_lossy(self.payload.get(8..).unwrap_or_default()).into_owned()
    }
}

/// How a read of the server's frames ended.
#[derive(Debug)]
pub enum End {
    /// A GOAWAY arrived after this long.
    GoAway(Frame, Duration),
    /// The connection closed (EOF or reset) with no GOAWAY.
    Closed,
    /// Still open at the deadline.
    Open,
}

/// Reads frames until the predicate `stop` matches a frame, the connection closes, or `within`
/// passes. Frames seen are returned alongside.
pub async fn read_frames(
    reader: &mut OwnedReadHalf,
    within: Duration,
    mut stop: impl FnMut(&Frame) -> bool,
) -> (End, Vec<Frame>) {
    let started = Instant::now();
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    let result = timeout(within, async {
        let mut chunk = vec![0u8; 64 * 1024];
        for _ in 0..1_000_000 {
            while buf.len() >= 9 {
                let len = u32::from_be_bytes([0, buf[0], buf[1], buf[2]]) as usize;
                if buf.len() < 9 + len {
                    break;
                }
                let f = Frame {
                    kind: buf[3],
                    flags: buf[4],
                    stream: u32::from_be_bytes(buf[5..9].try_into().unwrap()) & 0x7fff_ffff,
                    payload: buf[9..9 + len].to_vec(),
                };
                buf.drain(..9 + len);
                let done = stop(&f);
                let goaway = f.kind == GOAWAY;
                frames.push(f.clone());
                if goaway {
                    return End::GoAway(f, started.elapsed());
                }
                if done {
                    return End::Open;
                }
            }
            match reader.read(&mut chunk).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        End::Open
    })
    .await;
    (result.unwrap_or(End::Open), frames)
}

/// One h2c `GET /` on a fresh connection; true if a 200 HEADERS frame (`:status 200` is
/// static-table index 8) arrives within `within`.
pub async fn h2_get_ok(addr: std::net::SocketAddr, within: Duration) -> bool {
    let Ok(Ok(stream)) = timeout(within, TcpStream::connect(addr)).await else {
        return false;
    };
    let (mut reader, mut writer) = stream.into_split();
    let mut out = hello();
    frame(&mut out, SETTINGS, ACK, 0, &[]);
    frame(&mut out, HEADERS, END_HEADERS | END_STREAM, 1, GET_BLOCK);
    if writer.write_all(&out).await.is_err() {
        return false;
    }
    let mut ok = false;
    read_frames(&mut reader, within, |f| {
        ok = f.kind == HEADERS && f.stream == 1 && f.payload.first() == Some(&0x88);
        ok
    })
    .await;
    ok
}
