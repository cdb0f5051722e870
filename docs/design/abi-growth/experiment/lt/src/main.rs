use abi_stable::{prefix_type::WithMetadata, std_types::{RSlice, RStr}, StableAbi};
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ReqLRef)))]
pub struct ReqL<'a> {
    pub head: RSlice<'a, u8>,
    #[sabi(last_prefix_field)]
    pub path: RStr<'a>,
    pub query: RStr<'a>,
}
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = ModRef)))]
pub struct Mod {
    #[sabi(last_prefix_field)]
    pub handle: extern "C" fn(ReqLRef<'_>) -> usize,
}
extern "C" fn h(r: ReqLRef<'_>) -> usize { r.head().len() + r.path().len() + r.query().map_or(0, |q| q.len()) }
fn main() {
    let buf = String::from("GET /x?y HTTP/1.1");
    let w = WithMetadata::new(ReqL { head: RSlice::from_slice(buf.as_bytes()), path: RStr::from(&buf[4..6]), query: RStr::from(&buf[7..8]) });
    let r = ReqLRef(unsafe { w.as_prefix() });
    println!("{}", h(r));
}
