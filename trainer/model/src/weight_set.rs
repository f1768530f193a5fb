//! Tensors by their Hugging Face names (`model.layers.0.self_attn.q_proj.weight`, PyTorch
//! `[out, in]` layout, f32): what checkpoint readers fill ([`crate::weights`]), what
//! [`crate::llama::Llama::from_weights`] takes apart, and what saving writes back as
//! safetensors, so a trained model loads here and in other tools.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// Tensors by name: shape (row-major, PyTorch order) and f32 values.
#[derive(Debug, Default)]
pub struct WeightSet {
    tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    source: PathBuf,
}

impl WeightSet {
    /// An empty set whose errors name `source` (the file or directory its tensors come from).
    pub(crate) fn from_source(source: &Path) -> Self {
        Self {
            tensors: BTreeMap::new(),
            source: source.to_path_buf(),
        }
    }

    /// Adds (or replaces) a tensor.
    pub fn insert(&mut self, name: &str, shape: Vec<usize>, values: Vec<f32>) {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        self.tensors.insert(name.to_string(), (shape, values));
    }

    /// Names held.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let Some((found, values)) = self.tensors.remove(name) else {
            return Err(Error::Model {
                path: self.source.clone(),
                message: format!("tensor {name} is missing"),
            });
        };
        // A 1-D tensor may come as [n] or [1, n]; a matrix must match exactly.
        let squeeze = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
        if found != shape && squeeze(&found) != squeeze(shape) {
            return Err(Error::Model {
                path: self.source.clone(),
                message: format!("tensor {name} has shape {found:?}, the config implies {shape:?}"),
            });
        }
        Ok(values)
    }

    /// A PyTorch linear weight `[out, in]`, returned in burn's `[in, out]` layout.
    pub fn linear(
        &mut self,
        name: &str,
        out: usize,
        inp: usize,
        device: &Device,
    ) -> Result<Tensor<2>> {
        let values = self.take(name, &[out, inp])?;
        let mut transposed = vec![0.0f32; values.len()];
        for (r, row) in values.chunks_exact(inp).enumerate() {
            for (c, &v) in row.iter().enumerate() {
                transposed[c * out + r] = v;
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(transposed, [inp, out]),
            device,
        ))
    }

    /// A matrix kept in its stored layout (the embedding, `[vocab, hidden]`).
    pub fn matrix(
        &mut self,
        name: &str,
        rows: usize,
        cols: usize,
        device: &Device,
    ) -> Result<Tensor<2>> {
        let values = self.take(name, &[rows, cols])?;
        Ok(Tensor::from_data(
            TensorData::new(values, [rows, cols]),
            device,
        ))
    }

    /// A vector (norm gains, biases).
    pub fn vector(&mut self, name: &str, len: usize, device: &Device) -> Result<Tensor<1>> {
        let values = self.take(name, &[len])?;
        Ok(Tensor::from_data(TensorData::new(values, [len]), device))
    }
}

impl WeightSet {
    /// The tensors, by name.
    pub fn tensors(&self) -> &BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        &self.tensors
    }

    /// Writes every tensor as f32 into one safetensors file (`metadata` goes in its header),
    /// under a temporary name renamed into place, so a crash never leaves a partial file.
    pub fn save_safetensors(
        &self,
        path: &Path,
        metadata: Option<std::collections::HashMap<String, String>>,
    ) -> Result<()> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, (shape, values))| {
                let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.clone(), shape.clone(), raw)
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(name, shape, raw)| {
                safetensors::tensor::TensorView::new(Dtype::F32, shape.clone(), raw)
                    .map(|view| (name.clone(), view))
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Model {
                path: path.to_path_buf(),
                message: format!("cannot lay out tensors: {e}"),
            })?;
        let tmp = path.with_extension("safetensors.tmp");
        safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| Error::Model {
            path: tmp.clone(),
            message: format!("cannot write safetensors: {e}"),
        })?;
        std::fs::rename(&tmp, path).map_err(Error::io(path))
    }

    /// Reads every tensor of one safetensors file (F32, F16 or BF16) as f32.
    pub fn load_safetensors(path: &Path) -> Result<Self> {
        Ok(Self::load_safetensors_with_metadata(path)?.0)
    }

    /// Like [`WeightSet::load_safetensors`], also returning the header's metadata.
    pub fn load_safetensors_with_metadata(
        path: &Path,
    ) -> Result<(Self, std::collections::HashMap<String, String>)> {
        let mut set = WeightSet {
            source: path.to_path_buf(),
            ..Default::default()
        };
        let metadata = set.read_file(path)?;
        Ok((set, metadata))
    }

    /// The tensors, by name, taken out of the set.
    pub fn into_tensors(self) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
        self.tensors
    }

    /// Adds every tensor of `file` and returns the file's metadata.
    pub(crate) fn read_file(
        &mut self,
        file: &Path,
    ) -> Result<std::collections::HashMap<String, String>> {
        let bytes = std::fs::read(file).map_err(Error::io(file))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| Error::Model {
            path: file.to_path_buf(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| Error::Model {
            path: file.to_path_buf(),
            message: format!("not a valid safetensors file: {e}"),
        })?;
        for (name, view) in tensors.tensors() {
            let data = view.data();
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F16 => data
                    .chunks_exact(2)
                    .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => data
                    .chunks_exact(2)
                    .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(Error::Model {
                        path: file.to_path_buf(),
                        message: format!(
                            "tensor {name} has dtype {other:?} (F32, F16, BF16 are read)"
                        ),
                    });
                }
            };
            self.insert(&name, view.shape().to_vec(), values);
        }
        Ok(metadata)
    }
}
