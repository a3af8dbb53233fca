//! The router's UAPI `set=1` parser, then the parsed request applied to a live `Device`: any
//! bytes give a request or an error, never a panic, and applying never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use staticwire_router::device::{Device, NetControl};
use staticwire_router::uapi::parse::parse_set;
use staticwire_router::uapi::UapiError;
use std::time::Instant;

struct NoNet;
impl NetControl for NoNet {
    fn rebind(&self, port: u16, _: u32) -> Result<u16, UapiError> {
        Ok(port)
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(req) = parse_set(text.lines()) {
        let dev = Device::new();
        let _ = dev.apply(Instant::now(), &req, &NoNet);
        // Applied twice: removals, replacements and updates of existing peers.
        let _ = dev.apply(Instant::now(), &req, &NoNet);
    }
});
