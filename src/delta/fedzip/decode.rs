//! The byte format, reading side: validates everything, never panics.

use super::bits::{plain_width, BitReader, Table};
use super::{
    context, Delta, Error, Positions, SparseTensor, BLOCK, MAGIC, MAX_CLUSTERS, MAX_LEN, MAX_NAME,
    RICE_BITS, VERSION,
};
use crate::varint;
use std::collections::HashSet;

/// Decodes and validates a delta whose tensors hold at most `max_elements`
/// elements in total. Never panics; allocates at most a small multiple of
/// `bytes.len()` (plus names and centroids, bounded by the input).
pub fn decode(bytes: &[u8], max_elements: u64) -> Result<Delta, Error> {
    let mut r = Reader { bytes, pos: 0 };
    if r.take(4, "magic")? != MAGIC {
        return Err(Error::Magic);
    }
    let version = r.take(1, "version")?[0];
    if version != VERSION {
        return Err(Error::Version(version));
    }
    let n = r.varint("tensor count")?;
    // Each tensor takes at least 7 bytes.
    if n > (r.remaining() / 7) as u64 {
        return Err(Error::Truncated(format!("{n} tensors")));
    }
    let mut tensors = Vec::with_capacity(n as usize);
    let mut names = HashSet::new();
    let mut total: u64 = 0;
    for index in 0..n as usize {
        let t = decode_tensor(&mut r, index, max_elements, &mut total)?;
        if !names.insert(t.name.clone()) {
            return Err(Error::DuplicateName { name: t.name });
        }
        tensors.push(t);
    }
    if r.remaining() > 0 {
        return Err(Error::Trailing(r.remaining()));
    }
    Ok(Delta { tensors })
}

fn decode_tensor(
    r: &mut Reader<'_>,
    index: usize,
    max_elements: u64,
    total: &mut u64,
) -> Result<SparseTensor, Error> {
    let ctx = |name: &str| context(index, name);
    let name_len = r.varint("name length")?;
    if name_len == 0 || name_len > MAX_NAME as u64 {
        return Err(Error::Invalid {
            context: ctx(""),
            message: format!("name length {name_len} not within 1..={MAX_NAME}"),
        });
    }
    let raw = r.take(name_len as usize, "name")?;
    let name = std::str::from_utf8(raw)
        .map_err(|_| Error::Invalid {
            context: ctx(""),
            message: "name is not UTF-8".into(),
        })?
        .to_string();
    let bad = |message: String| Error::Invalid {
        context: ctx(&name),
        message,
    };
    let len = r.varint("len")?;
    if len > MAX_LEN {
        return Err(bad(format!("len {len} exceeds 2^32")));
    }
    *total = total.saturating_add(len);
    if *total > max_elements {
        return Err(Error::TooLarge {
            context: ctx(&name),
            max: max_elements,
        });
    }
    let k = r.varint("centroid count")?;
    if k > MAX_CLUSTERS as u64 {
        return Err(bad(format!("{k} centroids, more than {MAX_CLUSTERS}")));
    }
    let k = k as usize;
    let raw = r.take(4 * k, "centroids")?;
    let centroids: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if let Some(c) = centroids.iter().find(|c| !c.is_finite()) {
        return Err(bad(format!("non-finite centroid {c}")));
    }
    let count = r.varint("kept count")?;
    if count > len {
        return Err(bad(format!("{count} kept entries of {len}")));
    }
    if count > 0 && k == 0 {
        return Err(bad(format!("{count} kept entries but no centroids")));
    }
    let coding = match r.take(1, "position coding")?[0] {
        0 => Positions::Diff,
        1 => Positions::Plain,
        c => return Err(bad(format!("unknown position coding {c}"))),
    };
    let lengths = if count > 0 {
        r.take(k, "code lengths")?.to_vec()
    } else {
        Vec::new()
    };
    let bits_len = r.varint("bitstream length")?;
    if bits_len > r.remaining() as u64 {
        return Err(Error::Truncated(format!("{} bitstream", ctx(&name))));
    }
    let bits = r.take(bits_len as usize, "bitstream")?;
    // Every position after the first costs at least one bit, so this bounds
    // the allocation by the input length.
    if count > 1 && count > 8 * bits_len {
        return Err(bad(format!(
            "{count} kept entries cannot fit in {bits_len} bytes"
        )));
    }
    let count = count as usize;
    let mut positions = Vec::with_capacity(count);
    let mut ids = Vec::with_capacity(count);
    if count > 0 {
        let table = Table::new(&lengths).map_err(bad)?;
        let mut br = BitReader::new(bits);
        let trunc = |_| Error::Truncated(format!("{} bitstream", ctx(&name)));
        match coding {
            Positions::Diff => {
                let mut next: u64 = 0; // smallest allowed next position
                while positions.len() < count {
                    let rice = br.read(RICE_BITS).map_err(trunc)?;
                    for _ in 0..BLOCK.min(count - positions.len()) {
                        let mut q: u64 = 0;
                        while br.read(1).map_err(trunc)? == 1 {
                            q += 1;
                            if q > (MAX_LEN - 1) >> rice {
                                return Err(bad("gap out of range".into()));
                            }
                        }
                        let g = (q << rice) | u64::from(br.read(rice).map_err(trunc)?);
                        let p = next + g;
                        if p >= len {
                            return Err(bad(format!("position {p} not below len {len}")));
                        }
                        positions.push(p as u32);
                        next = p + 1;
                    }
                }
            }
            Positions::Plain => {
                let width = plain_width(len);
                let mut prev: Option<u64> = None;
                for _ in 0..count {
                    let p = u64::from(br.read(width).map_err(trunc)?);
                    if p >= len {
                        return Err(bad(format!("position {p} not below len {len}")));
                    }
                    if prev.is_some_and(|q| p <= q) {
                        return Err(bad(format!("position {p} not increasing")));
                    }
                    positions.push(p as u32);
                    prev = Some(p);
                }
            }
        }
        for _ in 0..count {
            ids.push(table.decode(&mut br).map_err(trunc)?);
        }
        let used = br.pos.div_ceil(8);
        if used != bits.len() {
            return Err(bad(format!(
                "bitstream holds {} bytes, {used} used",
                bits.len()
            )));
        }
        if !br.pos.is_multiple_of(8) && bits[bits.len() - 1] >> (br.pos % 8) != 0 {
            return Err(bad("nonzero padding bits".into()));
        }
    } else if bits_len != 0 {
        return Err(bad(format!("{bits_len} bitstream bytes for no entries")));
    }
    Ok(SparseTensor {
        name,
        len,
        centroids,
        positions,
        ids,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Error> {
        if n > self.remaining() {
            return Err(Error::Truncated(what.to_string()));
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn varint(&mut self, what: &str) -> Result<u64, Error> {
        let rest = self.bytes.get(self.pos..).unwrap_or_default();
        let (v, n) = varint::decode(rest).map_err(|e| match e {
            varint::Error::Truncated => Error::Truncated(what.to_string()),
            e => Error::Invalid {
                context: "varint".into(),
                message: format!("{what}: {e}"),
            },
        })?;
        self.pos += n;
        Ok(v)
    }
}
