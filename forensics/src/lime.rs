//! LiME memory images: structural validation, and conversion of AVML's
//! compressed variant to plain LiME.
//!
//! A LiME image is a sequence of ranges, each a 32-byte header
//! (little-endian: u32 magic `0x4C694D45`, u32 version 1, u64 start, u64
//! end *inclusive*, 8 reserved zero bytes) followed by `end - start + 1`
//! bytes of memory. There is no index and no footer, so the only way to
//! know an image is whole is to walk it: Volatility does not, and silently
//! falls back to a raw layer on a corrupt header. Every image is checked
//! here before any analysis.
//!
//! AVML's compressed images use magic `0x4C4D5641` ("AVML"), version 2,
//! the same header, then the range's bytes as a snappy frame stream, then a
//! u64 with the length of that stream.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::coverage::{ImageRange, ZeroScan, ZeroStats};

/// `EMiL` read as a little-endian u32.
pub const LIME_MAGIC: u32 = 0x4C69_4D45;
/// `AVML` read as a little-endian u32.
pub const AVML_MAGIC: u32 = 0x4C4D_5641;
/// The header `version` of a LiME range.
pub const LIME_VERSION: u32 = 1;
/// The header `version` of an AVML compressed range.
pub const AVML_VERSION: u32 = 2;
/// Bytes in a range header, LiME or AVML.
pub const HEADER_LEN: u64 = 32;

/// Copy buffer for range data: large enough to be fast, small enough to
/// keep memory flat for images of any size.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// The on-disk format of an image, from its range headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Plain LiME: magic [`LIME_MAGIC`], version 1, raw range bytes (also
    /// what AVML writes when asked for LiME).
    Lime,
    /// AVML's compressed variant: magic [`AVML_MAGIC`], version 2, snappy
    /// frames per range.
    AvmlCompressed,
}

/// One memory range of an image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// 0 for the first range.
    pub index: usize,
    /// Physical start address.
    pub start: u64,
    /// Physical end address, inclusive.
    pub end: u64,
    /// Where the range's header is in the file.
    pub header_offset: u64,
    /// Its pages, and how many are all zero (the tail counts most: a
    /// capture tool that gave up on a range zero-fills its rest).
    #[serde(default, flatten)]
    pub zeros: ZeroStats,
}

impl Range {
    /// Bytes of memory in the range (never 0: the end is inclusive).
    pub fn size(&self) -> u64 {
        self.end.saturating_sub(self.start).saturating_add(1)
    }

    /// The range as the coverage check takes it.
    pub fn image_range(&self) -> ImageRange {
        ImageRange {
            start: self.start,
            end: self.end,
            zeros: self.zeros,
        }
    }
}

/// Passes a range's bytes to the writer and counts its zero pages.
struct Zeroes<'a, W> {
    inner: &'a mut W,
    scan: ZeroScan,
}

impl<W: Write> Write for Zeroes<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan.update(buf.get(..n).unwrap_or_default());
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Copies a range's data (see [`copy_range`]) and counts its zero pages.
fn copy_counting<R: Read, W: Write>(
    r: &mut R,
    len: u64,
    out: &mut W,
) -> io::Result<(u64, ZeroStats)> {
    let mut z = Zeroes {
        inner: out,
        scan: ZeroScan::new(),
    };
    let copied = copy_range(r, len, &mut z)?;
    Ok((copied, z.scan.finish()))
}

/// A structurally sound image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// The format every range header has.
    pub format: Format,
    /// Every range, in file order (which is address order).
    pub ranges: Vec<Range>,
    /// Bytes read from the file.
    pub file_size: u64,
    /// Bytes of memory the ranges hold.
    pub memory_bytes: u64,
}

/// What is wrong with an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// An I/O error reading the image (or writing the LiME copy); its
    /// message.
    Io(String),
    /// No range at all: the file is empty.
    Empty,
    /// A header whose magic is neither LiME's nor AVML's; the magic read.
    BadMagic(u32),
    /// A known magic with a version other than its format's.
    BadVersion {
        /// The header's magic ([`LIME_MAGIC`] or [`AVML_MAGIC`]).
        magic: u32,
        /// The version read.
        version: u32,
    },
    /// An AVML range in a LiME image or the other way round.
    MixedFormats,
    /// A header whose (inclusive) end address is below its start.
    EndBeforeStart {
        /// The header's start address.
        start: u64,
        /// The header's end address.
        end: u64,
    },
    /// A range that starts at or before the previous range's end: ranges
    /// must be in address order and disjoint.
    Overlap {
        /// The previous range's end address (inclusive).
        previous_end: u64,
        /// This range's start address.
        start: u64,
    },
    /// The header's 8 reserved bytes are not all zero.
    ReservedNotZero,
    /// The file ends inside a range's data (or an AVML range's length
    /// footer).
    Truncated {
        /// Bytes the range (or footer) should hold.
        expected: u64,
        /// Bytes there were.
        available: u64,
    },
    /// Fewer than 32 bytes after the last range: not a header.
    TrailingGarbage {
        /// How many bytes are left over.
        bytes: u64,
    },
    /// An AVML range's u64 footer disagrees with the length of its
    /// compressed data.
    BadCompressedLength {
        /// The length the footer records, in bytes.
        recorded: u64,
        /// The bytes the snappy stream actually took.
        actual: u64,
    },
    /// An AVML range's snappy data does not decode; the decoder's message.
    Decompression(String),
}

/// A problem, with the range it is in and the file offset where it was
/// found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LimeError {
    /// The range (0-based) whose header or data is wrong; None for
    /// problems of the file as a whole.
    pub range: Option<usize>,
    /// Byte offset in the file where the problem was found (the header,
    /// the field within it, or the range's data).
    pub offset: u64,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for LimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.range {
            Some(r) => write!(f, "range {r} at offset {}: ", self.offset)?,
            None => write!(f, "at offset {}: ", self.offset)?,
        }
        match &self.problem {
            Problem::Io(e) => write!(f, "read error: {e}"),
            Problem::Empty => write!(f, "the image is empty: no range"),
            Problem::BadMagic(m) => write!(
                f,
                "bad magic 0x{m:08X} (LiME is 0x{LIME_MAGIC:08X}, AVML 0x{AVML_MAGIC:08X})"
            ),
            Problem::BadVersion { magic, version } => write!(
                f,
                "bad version {version} for magic 0x{magic:08X} (LiME is version {LIME_VERSION}, AVML {AVML_VERSION})"
            ),
            Problem::MixedFormats => write!(f, "LiME and AVML ranges are mixed in one image"),
            Problem::EndBeforeStart { start, end } => write!(
                f,
                "end 0x{end:X} is before start 0x{start:X} (the end address is inclusive)"
            ),
            Problem::Overlap { previous_end, start } => write!(
                f,
                "start 0x{start:X} is not after the previous range's end 0x{previous_end:X} (ranges must be ordered and must not overlap)"
            ),
            Problem::ReservedNotZero => write!(f, "the 8 reserved header bytes are not zero"),
            Problem::Truncated { expected, available } => write!(
                f,
                "truncated: the range holds {expected} bytes but only {available} follow"
            ),
            Problem::TrailingGarbage { bytes } => write!(
                f,
                "{bytes} trailing bytes after the last range, too short for a header"
            ),
            Problem::BadCompressedLength { recorded, actual } => write!(
                f,
                "the compressed length recorded after the range is {recorded} but the data took {actual} bytes"
            ),
            Problem::Decompression(e) => write!(f, "the compressed data does not decode: {e}"),
        }
    }
}

struct Header {
    magic: u32,
    version: u32,
    start: u64,
    end: u64,
    reserved: [u8; 8],
}

fn le_u32(b: &[u8; 32], at: usize) -> u32 {
    let mut x = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        x.copy_from_slice(s);
    }
    u32::from_le_bytes(x)
}

fn le_u64(b: &[u8; 32], at: usize) -> u64 {
    let mut x = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        x.copy_from_slice(s);
    }
    u64::from_le_bytes(x)
}

fn parse_header(b: &[u8; 32]) -> Header {
    let mut reserved = [0u8; 8];
    if let Some(s) = b.get(24..32) {
        reserved.copy_from_slice(s);
    }
    Header {
        magic: le_u32(b, 0),
        version: le_u32(b, 4),
        start: le_u64(b, 8),
        end: le_u64(b, 16),
        reserved,
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        match r.read(rest) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Copies exactly `len` bytes (or as many as there are) to `out`;
/// returns the bytes copied.
fn copy_range<R: Read, W: Write>(r: &mut R, len: u64, out: &mut W) -> io::Result<u64> {
    let mut left = len;
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    while left > 0 {
        let want = usize::try_from(left.min(COPY_BUFFER_BYTES as u64)).unwrap_or(COPY_BUFFER_BYTES);
        let Some(chunk) = buf.get_mut(..want) else {
            break;
        };
        let n = read_full(r, chunk)?;
        if n == 0 {
            break;
        }
        out.write_all(chunk.get(..n).unwrap_or_default())?;
        left -= n as u64;
        if n < want {
            break;
        }
    }
    Ok(len - left)
}

/// Walks an image and checks every range; reads it to the end. For AVML
/// images the ranges are decompressed (and, when `lime_out` is given,
/// written to it as plain LiME); for LiME images `lime_out` receives the
/// image unchanged.
fn walk<R: Read, W: Write>(input: R, mut lime_out: Option<&mut W>) -> Result<Summary, LimeError> {
    let mut r = Counting {
        inner: input,
        count: 0,
    };
    let mut ranges: Vec<Range> = Vec::new();
    let mut format: Option<Format> = None;
    let mut memory_bytes = 0u64;
    let io_err = |range: Option<usize>, offset: u64, e: io::Error| LimeError {
        range,
        offset,
        problem: Problem::Io(e.to_string()),
    };
    loop {
        let index = ranges.len();
        let offset = r.count;
        let mut hb = [0u8; 32];
        let n = read_full(&mut r, &mut hb).map_err(|e| io_err(Some(index), offset, e))?;
        if n == 0 {
            break;
        }
        if n < hb.len() {
            return Err(LimeError {
                range: Some(index),
                offset,
                problem: Problem::TrailingGarbage { bytes: n as u64 },
            });
        }
        let h = parse_header(&hb);
        let this = match (h.magic, h.version) {
            (LIME_MAGIC, LIME_VERSION) => Format::Lime,
            (AVML_MAGIC, AVML_VERSION) => Format::AvmlCompressed,
            (LIME_MAGIC, v) | (AVML_MAGIC, v) => {
                return Err(LimeError {
                    range: Some(index),
                    offset: offset + 4,
                    problem: Problem::BadVersion {
                        magic: h.magic,
                        version: v,
                    },
                })
            }
            (m, _) => {
                return Err(LimeError {
                    range: Some(index),
                    offset,
                    problem: Problem::BadMagic(m),
                })
            }
        };
        match format {
            None => format = Some(this),
            Some(f) if f != this => {
                return Err(LimeError {
                    range: Some(index),
                    offset,
                    problem: Problem::MixedFormats,
                })
            }
            Some(_) => {}
        }
        if h.reserved != [0u8; 8] {
            return Err(LimeError {
                range: Some(index),
                offset: offset + 24,
                problem: Problem::ReservedNotZero,
            });
        }
        if h.end < h.start {
            return Err(LimeError {
                range: Some(index),
                offset: offset + 8,
                problem: Problem::EndBeforeStart {
                    start: h.start,
                    end: h.end,
                },
            });
        }
        if let Some(prev) = ranges.last() {
            if h.start <= prev.end {
                return Err(LimeError {
                    range: Some(index),
                    offset: offset + 8,
                    problem: Problem::Overlap {
                        previous_end: prev.end,
                        start: h.start,
                    },
                });
            }
        }
        let mut range = Range {
            index,
            start: h.start,
            end: h.end,
            header_offset: offset,
            zeros: ZeroStats::default(),
        };
        let len = range.size();
        let data_offset = r.count;
        match this {
            Format::Lime => {
                let (copied, zeros) = match lime_out.as_deref_mut() {
                    Some(w) => {
                        w.write_all(&hb)
                            .map_err(|e| io_err(Some(index), offset, e))?;
                        copy_counting(&mut r, len, w)
                    }
                    None => copy_counting(&mut r, len, &mut io::sink()),
                }
                .map_err(|e| io_err(Some(index), data_offset, e))?;
                range.zeros = zeros;
                if copied < len {
                    return Err(LimeError {
                        range: Some(index),
                        offset: data_offset,
                        problem: Problem::Truncated {
                            expected: len,
                            available: copied,
                        },
                    });
                }
            }
            Format::AvmlCompressed => {
                let compressed_start = r.count;
                let (produced, zeros) = {
                    let mut decoder = snap::read::FrameDecoder::new(&mut r).take(len);
                    match lime_out.as_deref_mut() {
                        Some(w) => {
                            let mut lime_header = hb;
                            if let Some(m) = lime_header.get_mut(0..8) {
                                m.copy_from_slice(
                                    &[LIME_MAGIC.to_le_bytes(), LIME_VERSION.to_le_bytes()]
                                        .concat(),
                                );
                            }
                            w.write_all(&lime_header)
                                .map_err(|e| io_err(Some(index), offset, e))?;
                            copy_counting(&mut decoder, len, w)
                        }
                        None => copy_counting(&mut decoder, len, &mut io::sink()),
                    }
                    .map_err(|e| LimeError {
                        range: Some(index),
                        offset: data_offset,
                        problem: Problem::Decompression(e.to_string()),
                    })?
                };
                range.zeros = zeros;
                if produced < len {
                    return Err(LimeError {
                        range: Some(index),
                        offset: data_offset,
                        problem: Problem::Truncated {
                            expected: len,
                            available: produced,
                        },
                    });
                }
                let actual = r.count - compressed_start;
                let footer_offset = r.count;
                let mut fb = [0u8; 8];
                let n = read_full(&mut r, &mut fb)
                    .map_err(|e| io_err(Some(index), footer_offset, e))?;
                if n < fb.len() {
                    return Err(LimeError {
                        range: Some(index),
                        offset: footer_offset,
                        problem: Problem::Truncated {
                            expected: 8,
                            available: n as u64,
                        },
                    });
                }
                let recorded = u64::from_le_bytes(fb);
                if recorded != actual {
                    return Err(LimeError {
                        range: Some(index),
                        offset: footer_offset,
                        problem: Problem::BadCompressedLength { recorded, actual },
                    });
                }
            }
        }
        memory_bytes += len;
        ranges.push(range);
    }
    let Some(format) = format else {
        return Err(LimeError {
            range: None,
            offset: 0,
            problem: Problem::Empty,
        });
    };
    if let Some(w) = lime_out {
        w.flush().map_err(|e| io_err(None, r.count, e))?;
    }
    Ok(Summary {
        format,
        ranges,
        file_size: r.count,
        memory_bytes,
    })
}

/// Checks an image's structure, reading it once to the end.
pub fn check<R: Read>(input: R) -> Result<Summary, LimeError> {
    walk::<R, io::Sink>(input, None)
}

/// Checks an image and writes it as plain LiME: an AVML image is
/// decompressed; a LiME image is copied as is.
pub fn to_lime<R: Read, W: Write>(input: R, out: &mut W) -> Result<Summary, LimeError> {
    walk(input, Some(out))
}

/// Writes a LiME range header.
pub fn lime_header(start: u64, end: u64) -> [u8; 32] {
    let mut h = [0u8; 32];
    let parts: [&[u8]; 4] = [
        &LIME_MAGIC.to_le_bytes(),
        &LIME_VERSION.to_le_bytes(),
        &start.to_le_bytes(),
        &end.to_le_bytes(),
    ];
    let mut at = 0;
    for p in parts {
        if let Some(dst) = h.get_mut(at..at + p.len()) {
            dst.copy_from_slice(p);
        }
        at += p.len();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(ranges: &[(u64, u64, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(start, end, fill) in ranges {
            out.extend_from_slice(&lime_header(start, end));
            out.extend(std::iter::repeat_n(fill, (end - start + 1) as usize));
        }
        out
    }

    #[test]
    fn a_sound_image_lists_its_ranges() {
        let img = image(&[(0x1000, 0x1fff, 1), (0x100000, 0x100fff, 2)]);
        let s = check(&img[..]).unwrap();
        assert_eq!(s.format, Format::Lime);
        assert_eq!(s.ranges.len(), 2);
        assert_eq!(s.ranges[1].header_offset, 32 + 0x1000);
        assert_eq!(s.memory_bytes, 0x2000);
        assert_eq!(s.file_size, img.len() as u64);
    }

    #[test]
    fn each_corruption_names_its_range_and_offset() {
        let good = image(&[(0x1000, 0x1fff, 1), (0x100000, 0x100fff, 2)]);
        let second = 32 + 0x1000;

        let mut bad_magic = good.clone();
        bad_magic[second] = b'X';
        let e = check(&bad_magic[..]).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(1), second as u64));
        assert!(matches!(e.problem, Problem::BadMagic(_)));

        let mut bad_version = good.clone();
        bad_version[4] = 9;
        let e = check(&bad_version[..]).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(0), 4));
        assert!(e
            .to_string()
            .starts_with("range 0 at offset 4: bad version 9"));

        let overlapping = image(&[(0x1000, 0x1fff, 1), (0x1800, 0x27ff, 2)]);
        let e = check(&overlapping[..]).unwrap_err();
        assert_eq!(e.range, Some(1));
        assert!(matches!(e.problem, Problem::Overlap { .. }));

        let truncated = &good[..good.len() - 100];
        let e = check(truncated).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(1), (second + 32) as u64));
        assert!(matches!(
            e.problem,
            Problem::Truncated {
                expected: 0x1000,
                available: 0xf9c
            }
        ));

        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        let e = check(&trailing[..]).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(2), good.len() as u64));
        assert!(matches!(e.problem, Problem::TrailingGarbage { bytes: 4 }));

        let mut long_trailing = good.clone();
        long_trailing.extend_from_slice(&[0u8; 40]);
        let e = check(&long_trailing[..]).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(2), good.len() as u64));
        assert!(matches!(e.problem, Problem::BadMagic(0)));

        let mut reserved = good.clone();
        reserved[30] = 1;
        let e = check(&reserved[..]).unwrap_err();
        assert_eq!((e.range, e.offset), (Some(0), 24));

        let backwards = image(&[(0x2000, 0x2000, 1)]);
        let mut b = backwards.clone();
        b[16..24].copy_from_slice(&0x1000u64.to_le_bytes());
        assert!(matches!(
            check(&b[..]).unwrap_err().problem,
            Problem::EndBeforeStart { .. }
        ));

        assert!(matches!(
            check(&[][..]).unwrap_err().problem,
            Problem::Empty
        ));
    }

    fn avml(ranges: &[(u64, u64, u8)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(start, end, fill) in ranges {
            let mut h = lime_header(start, end);
            h[0..4].copy_from_slice(&AVML_MAGIC.to_le_bytes());
            h[4..8].copy_from_slice(&AVML_VERSION.to_le_bytes());
            out.extend_from_slice(&h);
            let mut compressed = Vec::new();
            {
                let mut w = snap::write::FrameEncoder::new(&mut compressed);
                w.write_all(&vec![fill; (end - start + 1) as usize])
                    .unwrap();
            }
            out.extend_from_slice(&compressed);
            out.extend_from_slice(&(compressed.len() as u64).to_le_bytes());
        }
        out
    }

    #[test]
    fn avml_images_convert_to_the_same_lime() {
        let ranges = [(0x1000, 0x1fff, 7), (0x3000, 0x5fff, 9)];
        let compressed = avml(&ranges);
        let s = check(&compressed[..]).unwrap();
        assert_eq!(s.format, Format::AvmlCompressed);
        let mut lime = Vec::new();
        to_lime(&compressed[..], &mut lime).unwrap();
        assert_eq!(lime, image(&ranges));
        assert_eq!(check(&lime[..]).unwrap().format, Format::Lime);
    }

    #[test]
    fn avml_with_a_wrong_footer_is_refused() {
        let mut compressed = avml(&[(0x1000, 0x1fff, 7)]);
        let n = compressed.len();
        compressed[n - 8] ^= 1;
        let e = check(&compressed[..]).unwrap_err();
        assert!(
            matches!(e.problem, Problem::BadCompressedLength { .. }),
            "{e}"
        );
    }
}
