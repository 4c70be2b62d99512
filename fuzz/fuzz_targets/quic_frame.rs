//! QUIC data-plane frames come from any node that completes a handshake: decoding requests and
//! response headers from arbitrary bytes, pushed in arbitrary pieces, must never panic, and
//! whatever decodes must re-encode to a frame that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mhc_transport::{
    encode_request, encode_response_header, FrameDecoder, Request, ResponseHeader,
};

fuzz_target!(|input: (u8, &[u8])| {
    let (split, data) = input;
    let cut = (split as usize).min(data.len());

    let mut requests = FrameDecoder::<Request>::new();
    if let Ok(Some(req)) = requests.push(&data[..cut]).and_then(|r| match r {
        Some(r) => Ok(Some(r)),
        None => requests.push(&data[cut..]),
    }) {
        let again = encode_request(&req).expect("a decoded request re-encodes");
        let mut d = FrameDecoder::<Request>::new();
        assert_eq!(d.push(&again).unwrap(), Some(req));
    }

    let mut headers = FrameDecoder::<ResponseHeader>::new();
    if let Ok(Some(h)) = headers.push(data) {
        let again = encode_response_header(&h).expect("a decoded header re-encodes");
        let mut d = FrameDecoder::<ResponseHeader>::new();
        assert_eq!(d.push(&again).unwrap(), Some(h));
    }
});
