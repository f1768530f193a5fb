//! A reader for GGUF files (the llama.cpp model format): the key/value metadata, the tensor
//! directory, and the tensors themselves dequantized to `f32`.
//!
//! Supported tensor types are the ones llama-family checkpoints ship in: F32, F16, BF16, Q8_0,
//! Q4_0 and Q4_1 (the layouts of `ggml-common.h`: blocks of 32 values with an f16 scale, plus an
//! f16 minimum for Q4_1; low nibbles hold the first 16 values of a block, high nibbles the
//! last 16). Any other type is an error naming the tensor and the type, never a guess.
//!
//! Dimensions are reported the way ggml stores them, innermost first: a linear layer's weight
//! of `dims = [in, out]` is `out` rows of `in` values, i.e. PyTorch's `[out, in]` row-major.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    UInt(u64),
    /// Any signed integer type.
    Int(i64),
    /// f32 or f64.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A UTF-8 string.
    String(String),
    /// An array of values.
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::UInt(v) => Some(v),
            Value::Int(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is numeric.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Float(v) => Some(v),
            Value::UInt(v) => Some(v as f64),
            Value::Int(v) => Some(v as f64),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

/// The ggml tensor types this reader knows by name (for error messages) and how to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorType(pub u32);

impl TensorType {
    const F32: u32 = 0;
    const F16: u32 = 1;
    const Q4_0: u32 = 2;
    const Q4_1: u32 = 3;
    const Q8_0: u32 = 8;
    const BF16: u32 = 30;

    /// ggml's name of the type.
    pub fn name(self) -> String {
        let known = [
            "F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K",
            "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",
            "IQ4_NL", "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
            "BF16",
        ];
        known
            .get(self.0 as usize)
            .map_or_else(|| format!("type {}", self.0), |s| (*s).to_string())
    }

    /// Bytes per block and values per block, for the types this reader decodes.
    fn block(self) -> Option<(usize, usize)> {
        match self.0 {
            Self::F32 => Some((4, 1)),
            Self::F16 | Self::BF16 => Some((2, 1)),
            Self::Q4_0 => Some((18, 32)),
            Self::Q4_1 => Some((20, 32)),
            Self::Q8_0 => Some((34, 32)),
            _ => None,
        }
    }
}

/// A tensor's entry in the directory.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions, innermost first (ggml order).
    pub dims: Vec<u64>,
    /// Storage type.
    pub kind: TensorType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.dims.iter().product::<u64>() as usize
    }

    /// True for a tensor without values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The shape in row-major order (outermost first), as PyTorch and burn write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A GGUF file read into memory.
pub struct GgufFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// The metadata, by key.
    pub metadata: BTreeMap<String, Value>,
    /// The tensor directory, in file order.
    pub tensors: Vec<TensorInfo>,
    data_start: usize,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// A cursor over the header bytes that reports truncation with the file's name.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.bad(format!("truncated header at byte {}", self.pos)));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let len = usize::try_from(len).map_err(|_| self.bad("string length overflows".into()))?;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.bad(format!("invalid UTF-8 in a string at byte {}", self.pos)))
    }

    fn value(&mut self, kind: u32, depth: usize) -> Result<Value> {
        Ok(match kind {
            0 => Value::UInt(self.array::<1>()?[0] as u64),
            1 => Value::Int(self.array::<1>()?[0] as i8 as i64),
            2 => Value::UInt(u16::from_le_bytes(self.array()?) as u64),
            3 => Value::Int(i16::from_le_bytes(self.array()?) as i64),
            4 => Value::UInt(self.u32()? as u64),
            5 => Value::Int(i32::from_le_bytes(self.array()?) as i64),
            6 => Value::Float(f32::from_le_bytes(self.array()?) as f64),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 if depth == 0 => {
                let inner = self.u32()?;
                let count = self.u64()?;
                // Every element takes at least one byte: a count beyond the file is corrupt.
                if count > (self.bytes.len() - self.pos) as u64 {
                    return Err(self.bad(format!("array of {count} values exceeds the file")));
                }
                let mut values = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    values.push(self.value(inner, depth + 1)?);
                }
                Value::Array(values)
            }
            10 => Value::UInt(self.u64()?),
            11 => Value::Int(i64::from_le_bytes(self.array()?)),
            12 => Value::Float(f64::from_le_bytes(self.array()?)),
            other => return Err(self.bad(format!("unknown metadata value type {other}"))),
        })
    }

    fn bad(&self, message: String) -> Error {
        Error::Model {
            path: self.path.to_path_buf(),
            message,
        }
    }
}

impl GgufFile {
    /// Reads and validates the header and tensor directory of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::Model {
            path: path.to_path_buf(),
            message: format!("cannot read the model file: {e}"),
        })?;
        Self::parse(path, bytes)
    }

    fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut cursor = Cursor {
            path,
            bytes: &bytes,
            pos: 0,
        };
        if cursor.take(4).ok() != Some(MAGIC.as_slice()) {
            return Err(cursor.bad("not a GGUF file (bad magic)".into()));
        }
        let version = cursor.u32()?;
        if !(2..=3).contains(&version) {
            return Err(cursor.bad(format!(
                "GGUF version {version} is not supported (2 and 3 are)"
            )));
        }
        let tensor_count = cursor.u64()?;
        let kv_count = cursor.u64()?;
        let mut metadata = BTreeMap::new();
        for _ in 0..kv_count {
            let key = cursor.string()?;
            let kind = cursor.u32()?;
            let value = cursor.value(kind, 0)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::new();
        for _ in 0..tensor_count {
            let name = cursor.string()?;
            let n_dims = cursor.u32()?;
            if n_dims > 4 {
                return Err(cursor.bad(format!("tensor {name} has {n_dims} dimensions")));
            }
            let dims = (0..n_dims)
                .map(|_| cursor.u64())
                .collect::<Result<Vec<_>>>()?;
            let kind = TensorType(cursor.u32()?);
            let offset = cursor.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT)
            .max(1);
        let data_start = (cursor.pos as u64).div_ceil(alignment) * alignment;
        let file = Self {
            path: path.to_path_buf(),
            data_start: data_start as usize,
            bytes,
            metadata,
            tensors,
        };
        for info in &file.tensors {
            file.tensor_bytes(info)?;
        }
        Ok(file)
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value that must be present.
    pub fn require(&self, key: &str) -> Result<&Value> {
        self.metadata.get(key).ok_or_else(|| Error::Model {
            path: self.path.clone(),
            message: format!("metadata key {key} is missing"),
        })
    }

    /// A required unsigned integer.
    pub fn require_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?.as_u64().ok_or_else(|| Error::Model {
            path: self.path.clone(),
            message: format!("metadata key {key} is not an integer"),
        })
    }

    /// A required string.
    pub fn require_str(&self, key: &str) -> Result<&str> {
        self.require(key)?.as_str().ok_or_else(|| Error::Model {
            path: self.path.clone(),
            message: format!("metadata key {key} is not a string"),
        })
    }

    /// A string array (e.g. the tokenizer's tokens and merges).
    pub fn string_array(&self, key: &str) -> Result<Vec<&str>> {
        match self.require(key)? {
            Value::Array(values) => values
                .iter()
                .map(|v| {
                    v.as_str().ok_or_else(|| Error::Model {
                        path: self.path.clone(),
                        message: format!("metadata key {key} holds a non-string"),
                    })
                })
                .collect(),
            _ => Err(Error::Model {
                path: self.path.clone(),
                message: format!("metadata key {key} is not an array"),
            }),
        }
    }

    /// The tensor named `name`, if the file has it.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bad = |message: String| Error::Model {
            path: self.path.clone(),
            message: format!("tensor {}: {message}", info.name),
        };
        let Some((block_bytes, block_values)) = info.kind.block() else {
            return Err(bad(format!(
                "quantization {} is not supported (F32, F16, BF16, Q8_0, Q4_0 and Q4_1 are)",
                info.kind.name()
            )));
        };
        let values = info.len();
        if !values.is_multiple_of(block_values) {
            return Err(bad(format!(
                "{values} values are not a whole number of {block_values}-value blocks"
            )));
        }
        let len = values / block_values * block_bytes;
        let start = self.data_start as u64 + info.offset;
        let end = start + len as u64;
        if end > self.bytes.len() as u64 {
            return Err(bad(format!(
                "data ends at byte {end} but the file has {} (truncated?)",
                self.bytes.len()
            )));
        }
        Ok(&self.bytes[start as usize..end as usize])
    }

    /// The tensor named `name` dequantized to f32, in ggml element order (row-major over
    /// [`TensorInfo::shape`]).
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.info(name).ok_or_else(|| Error::Model {
            path: self.path.clone(),
            message: format!("tensor {name} is missing"),
        })?;
        let bytes = self.tensor_bytes(info)?;
        let mut out = Vec::with_capacity(info.len());
        match info.kind.0 {
            TensorType::F32 => out.extend(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))),
            ),
            TensorType::F16 => out.extend(bytes.chunks_exact(2).map(|b| half_at(b, 0))),
            TensorType::BF16 => out.extend(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()),
            ),
            TensorType::Q8_0 => {
                for block in bytes.chunks_exact(34) {
                    let scale = half_at(block, 0);
                    out.extend(block[2..].iter().map(|&q| q as i8 as f32 * scale));
                }
            }
            TensorType::Q4_0 => {
                for block in bytes.chunks_exact(18) {
                    let scale = half_at(block, 0);
                    let nibbles = &block[2..];
                    out.extend(nibbles.iter().map(|&q| ((q & 0x0f) as f32 - 8.0) * scale));
                    out.extend(nibbles.iter().map(|&q| ((q >> 4) as f32 - 8.0) * scale));
                }
            }
            TensorType::Q4_1 => {
                for block in bytes.chunks_exact(20) {
                    let scale = half_at(block, 0);
                    let min = half_at(block, 2);
                    let nibbles = &block[4..];
                    out.extend(nibbles.iter().map(|&q| (q & 0x0f) as f32 * scale + min));
                    out.extend(nibbles.iter().map(|&q| (q >> 4) as f32 * scale + min));
                }
            }
            _ => unreachable!("tensor_bytes rejects unsupported types"),
        }
        Ok(out)
    }
}

fn half_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a GGUF v3 file with the given metadata strings and tensors (name, dims, type, raw).
    pub(crate) fn write_gguf(
        metadata: &[(&str, &str)],
        tensors: &[(&str, Vec<u64>, u32, Vec<u8>)],
    ) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        }
        let mut out = Vec::new();
        out.extend(MAGIC);
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend((metadata.len() as u64).to_le_bytes());
        for (k, v) in metadata {
            string(&mut out, k);
            out.extend(8u32.to_le_bytes());
            string(&mut out, v);
        }
        let mut offset = 0u64;
        for (name, dims, kind, raw) in tensors {
            string(&mut out, name);
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(kind.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += (raw.len() as u64).div_ceil(32) * 32;
        }
        while out.len() % 32 != 0 {
            out.push(0);
        }
        for (_, _, _, raw) in tensors {
            out.extend(raw);
            while out.len() % 32 != 0 {
                out.push(0);
            }
        }
        out
    }

    fn parse(bytes: Vec<u8>) -> Result<GgufFile> {
        GgufFile::parse(Path::new("test.gguf"), bytes)
    }

    #[test]
    fn decodes_every_supported_type_by_hand() {
        let f32s: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let f16s: Vec<u8> = [0.5f32, -4.0]
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect();
        // Q8_0: scale 0.5, values -64..63 would be long; use 0..32 minus 16.
        let mut q8 = f16::from_f32(0.5).to_le_bytes().to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        // Q4_1: scale 2, min -1; nibble k in the low half is value k, high half is 15 - k.
        let mut q41 = f16::from_f32(2.0).to_le_bytes().to_vec();
        q41.extend(f16::from_f32(-1.0).to_le_bytes());
        q41.extend((0..16u8).map(|k| k | ((15 - k) << 4)));
        // Q4_0: scale 1; low nibble k → k - 8.
        let mut q40 = f16::from_f32(1.0).to_le_bytes().to_vec();
        q40.extend((0..16u8).map(|k| k | (k << 4)));
        let file = parse(write_gguf(
            &[("general.architecture", "llama")],
            &[
                ("a", vec![2], 0, f32s),
                ("b", vec![2], 1, f16s),
                ("c", vec![32], 8, q8),
                ("d", vec![32], 3, q41),
                ("e", vec![32], 2, q40),
            ],
        ))
        .unwrap();
        assert_eq!(file.require_str("general.architecture").unwrap(), "llama");
        assert_eq!(file.dequantize("a").unwrap(), vec![1.5, -2.0]);
        assert_eq!(file.dequantize("b").unwrap(), vec![0.5, -4.0]);
        let c = file.dequantize("c").unwrap();
        assert_eq!(c[0], -8.0);
        assert_eq!(c[31], 7.5);
        let d = file.dequantize("d").unwrap();
        assert_eq!(d[0], -1.0); // 0 * 2 - 1
        assert_eq!(d[15], 29.0); // 15 * 2 - 1
        assert_eq!(d[16], 29.0); // high nibble of byte 0 is 15
        assert_eq!(d[31], -1.0);
        let e = file.dequantize("e").unwrap();
        assert_eq!((e[0], e[15], e[16]), (-8.0, 7.0, -8.0));
    }

    #[test]
    fn refuses_unsupported_types_truncation_and_bad_magic() {
        let q6k = parse(write_gguf(&[], &[("w", vec![256], 14, vec![0; 210])]));
        let message = q6k.unwrap_err().to_string();
        assert!(
            message.contains("tensor w") && message.contains("Q6_K"),
            "{message}"
        );

        let mut truncated = write_gguf(&[], &[("w", vec![64], 0, vec![0; 256])]);
        truncated.truncate(truncated.len() - 100);
        let message = parse(truncated).unwrap_err().to_string();
        assert!(message.contains("truncated"), "{message}");

        let message = parse(b"GGML\0\0\0\0".to_vec()).unwrap_err().to_string();
        assert!(message.contains("not a GGUF file"), "{message}");
        let message = parse(MAGIC.to_vec()).unwrap_err().to_string();
        assert!(message.contains("truncated header"), "{message}");
    }
}
