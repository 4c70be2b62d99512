//! Block-aligned blob buffers: what a cache fill receives into, so the disk tier can write the
//! blob with `O_DIRECT` (the device reads the buffer; the kernel copies nothing into the page
//! cache) and then hand the same memory to the RAM tier and the viewer without a copy.
//!
//! Why direct writes for fills: a fill's bytes are already in RAM (our own tier holds the hot
//! ones), so copying every filled byte into the page cache as well costs a core's worth of
//! memcpy at fill rates and evicts the page cache's hot reads for cold writes. Caches that fill
//! at line rate (nginx `directio`, Traffic Server's raw disks) skip it for the same reason.

use bytes::Bytes;

/// Alignment of the buffer and of direct writes: a page, which is a multiple of every block
/// device's logical block size.
pub const BLOCK: usize = 4096;

/// A blob of `len` bytes in memory that starts on a [`BLOCK`] boundary and is followed by zero
/// padding up to the next boundary (so whole blocks can be written directly).
#[derive(Debug)]
pub struct AlignedBlob {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBlob {
    /// A zeroed blob of `len` bytes.
    pub fn zeroed(len: usize) -> Self {
        let buf = vec![0u8; padded_len(len) + BLOCK];
        // A byte pointer can always be aligned; the extra block leaves room for the offset.
        let start = buf.as_ptr().align_offset(BLOCK).min(BLOCK);
        Self { buf, start, len }
    }

    /// The blob's bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    /// The blob's bytes, to fill.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the blob is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes followed by zeros up to a whole number of blocks, starting on a block boundary
    /// (`None` if the allocator gave memory that could not be aligned, which does not happen for
    /// byte buffers but is not worth an assumption).
    pub fn whole_blocks(&self) -> Option<&[u8]> {
        let end = self.start + padded_len(self.len);
        ((self.as_slice().as_ptr() as usize).is_multiple_of(BLOCK) && end <= self.buf.len())
            .then(|| &self.buf[self.start..end])
    }

    /// The blob as shared bytes, without copying.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from(self.buf).slice(self.start..self.start + self.len)
    }
}

fn padded_len(len: usize) -> usize {
    len.div_ceil(BLOCK) * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_padded_and_handed_over_without_copy() {
        for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * 1024 * 1024 + 17] {
            let mut blob = AlignedBlob::zeroed(len);
            for (i, b) in blob.as_mut_slice().iter_mut().enumerate() {
                *b = (i % 251) as u8;
            }
            let blocks = blob.whole_blocks().expect("aligned");
            assert_eq!(blocks.as_ptr() as usize % BLOCK, 0);
            assert_eq!(blocks.len() % BLOCK, 0);
            assert!(blocks.len() >= len && blocks.len() < len + BLOCK);
            assert!(blocks[len..].iter().all(|&b| b == 0), "padding is zeros");
            let ptr = blob.as_slice().as_ptr();
            let bytes = blob.into_bytes();
            assert_eq!(bytes.len(), len);
            assert_eq!(bytes.as_ptr(), ptr, "no copy");
            assert!(bytes.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        }
    }
}
