//! Memory-mapped `*.safetensors` files of a model folder (single file or sharded with
//! `model.safetensors.index.json`), read tensor by tensor into burn tensors.
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, SafeTensors};
use safetensors::Dtype;

use super::error::ModelError;
use crate::parallel::Cut;

struct Shard {
    path: PathBuf,
    map: Mmap,
    /// Where tensor data starts in the file: 8 header-length bytes + the JSON header.
    data_start: usize,
    meta: Metadata,
}

/// Every tensor of a model folder, by name.
pub struct SafetensorFiles {
    shards: Vec<Shard>,
    shard_of: HashMap<String, usize>,
}

impl SafetensorFiles {
    /// Opens every shard in `dir`. Fails naming the file when one is missing, unreadable or truncated.
    pub fn open(dir: &Path) -> Result<Self, ModelError> {
        let mut files = shard_paths(dir)?;
        files.sort();
        let mut shards = Vec::new();
        let mut shard_of = HashMap::new();
        for path in files {
            let file = File::open(&path).map_err(|e| ModelError::io(&path, e))?;
            // SAFETY: the file is opened read-only and not modified while the model loads.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::io(&path, e))?;
            let bad = |msg: String| ModelError::BadWeights {
                path: path.clone(),
                msg,
            };
            let (header_len, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| bad(format!("not a valid safetensors file: {e}")))?;
            let data_start = 8 + header_len;
            let data_len = map.len().saturating_sub(data_start);
            if meta.data_len() > data_len {
                return Err(bad(format!(
                    "truncated: header promises {} data bytes, file has {data_len}",
                    meta.data_len()
                )));
            }
            for name in meta.tensors().keys() {
                shard_of.insert(name.clone(), shards.len());
            }
            shards.push(Shard {
                path,
                map,
                data_start,
                meta,
            });
        }
        Ok(Self { shards, shard_of })
    }

    /// Loads tensor `name`, checking that its shape is `shape`; converts to the device's float dtype.
    pub fn load<B: Backend, const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        self.load_cut(name, shape, &Cut::whole(), device)
    }

    /// The `cut` of tensor `name` of shape `full` (checked): only the cut's bytes are copied
    /// out of the mapped file (a rank's shard under tensor parallelism).
    pub fn load_cut<B: Backend, const D: usize>(
        &self,
        name: &str,
        full: [usize; D],
        cut: &Cut,
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        let (bytes, dtype) = self.bytes(name, &full)?;
        // from_data converts on the host only when the dtype differs from the device's default.
        Ok(Tensor::from_data(
            TensorData::from_bytes_vec(
                cut.apply(bytes, &full, dtype.size()),
                cut.shape(&full),
                dtype,
            ),
            device,
        ))
    }

    /// Tensor `name`'s values in host memory in the file's dtype, its shape checked.
    pub fn host_data(&self, name: &str, shape: &[usize]) -> Result<TensorData, ModelError> {
        let (bytes, dtype) = self.bytes(name, shape)?;
        Ok(TensorData::from_bytes_vec(
            bytes.to_vec(),
            shape.to_vec(),
            dtype,
        ))
    }

    /// Tensors `parts` (each with its shape) back to back as one tensor of `shape`, joined on
    /// the host: stacking them on the device would leave each part's pages in the memory pool.
    pub fn load_joined<B: Backend, const D: usize>(
        &self,
        parts: &[(String, Vec<usize>)],
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        self.load_joined_cut(parts, &Cut::whole(), shape, device)
    }

    /// [`load_joined`](Self::load_joined) with `cut` applied to every part; `shape` is the
    /// joined cut parts'.
    pub fn load_joined_cut<B: Backend, const D: usize>(
        &self,
        parts: &[(String, Vec<usize>)],
        cut: &Cut,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>, ModelError> {
        let elements = shape.iter().product::<usize>();
        let mut joined = Vec::new();
        let mut joined_dtype = None;
        for (name, part_shape) in parts {
            let (bytes, dtype) = self.bytes(name, part_shape)?;
            if joined_dtype.is_some_and(|d| d != dtype) {
                return Err(ModelError::BadWeights {
                    path: self.shards[self.shard_of[name.as_str()]].path.clone(),
                    msg: format!(
                        "tensor `{name}` has dtype {dtype:?}, unlike `{}`",
                        parts[0].0
                    ),
                });
            }
            if joined_dtype.is_none() {
                joined.reserve_exact(elements * dtype.size());
            }
            joined_dtype = Some(dtype);
            joined.extend_from_slice(&cut.apply(bytes, part_shape, dtype.size()));
        }
        let dtype = joined_dtype.unwrap_or(DType::F32);
        assert_eq!(
            joined.len(),
            elements * dtype.size(),
            "the parts fill the joined shape"
        );
        Ok(Tensor::from_data(
            TensorData::from_bytes_vec(joined, shape.to_vec(), dtype),
            device,
        ))
    }

    /// Tensor `name`'s bytes (in the mapped file) and dtype, its shape checked against `shape`.
    fn bytes(&self, name: &str, shape: &[usize]) -> Result<(&[u8], DType), ModelError> {
        let Some(&i) = self.shard_of.get(name) else {
            let path = self
                .shards
                .first()
                .map(|s| s.path.parent().unwrap_or(&s.path).to_path_buf())
                .unwrap_or_default();
            return Err(ModelError::MissingTensor {
                path,
                name: name.into(),
            });
        };
        let shard = &self.shards[i];
        let info = shard.meta.info(name).expect("indexed name has info");
        if info.shape != shape {
            return Err(ModelError::WrongShape {
                path: shard.path.clone(),
                name: name.into(),
                got: info.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let dtype = match info.dtype {
            Dtype::BF16 => DType::BF16,
            Dtype::F16 => DType::F16,
            Dtype::F32 => DType::F32,
            other => {
                return Err(ModelError::BadWeights {
                    path: shard.path.clone(),
                    msg: format!("tensor `{name}` has dtype {other:?}; expected bf16, f16 or f32"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        Ok((
            &shard.map[shard.data_start + start..shard.data_start + end],
            dtype,
        ))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.shard_of.contains_key(name)
    }
}

fn shard_paths(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let index = dir.join("model.safetensors.index.json");
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| ModelError::io(&index, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ModelError::Json {
                path: index.clone(),
                source: e,
            })?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| ModelError::MissingField {
                path: index.clone(),
                field: "weight_map".into(),
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|v| v.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.dedup();
        files.sort();
        files.dedup();
        for f in &files {
            if !f.exists() {
                return Err(ModelError::BadWeights {
                    path: f.clone(),
                    msg: format!("listed in {} but missing", index.display()),
                });
            }
        }
        return Ok(files);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))?;
    let files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    if files.is_empty() {
        return Err(ModelError::BadWeights {
            path: dir.into(),
            msg: "no *.safetensors file in the model folder".into(),
        });
    }
    Ok(files)
}
