//! A byte stream cut into arbitrary reads, as a connection's frame buffer sees it: frames come
//! out whole or the stream is refused, and the buffer never holds more than its limit allows.
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use dsm_proto::frame::{FrameBuffer, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let mut buf = FrameBuffer::new(MAX);
    while !u.is_empty() {
        let Ok(chunk) = <&[u8]>::arbitrary(&mut u) else {
            return;
        };
        buf.push(chunk);
        loop {
            match buf.pop() {
                Ok(Some(frame)) => assert!(frame.len() <= MAX),
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.pending() <= MAX + HEADER_LEN + chunk.len());
    }
});
