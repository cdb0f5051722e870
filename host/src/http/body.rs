//! TEMPORARY (to be replaced).
pub struct LengthBody { remaining: u64 }
impl LengthBody {
    pub fn new(len: u64) -> Self { LengthBody { remaining: len } }
    pub fn take(&mut self, available: usize) -> usize { let n = (available as u64).min(self.remaining) as usize; self.remaining -= n as u64; n }
    pub fn is_done(&self) -> bool { self.remaining == 0 }
}
pub struct ChunkedDecoder;
#[derive(Debug)]
pub struct Decoded { pub consumed: usize, pub written: usize, pub done: bool }
#[derive(Debug, thiserror::Error)]
pub enum BodyError { #[error("x")] X }
impl ChunkedDecoder {
    pub fn new(_: u64) -> Self { ChunkedDecoder }
    pub fn decode(&mut self, _src: &[u8], _dst: &mut [u8]) -> Result<Decoded, BodyError> { Err(BodyError::X) }
}
