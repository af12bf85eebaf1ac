//! The exporter's graph IR (nodes, initializers, typed inputs/outputs) and
//! its lowering to an ONNX `ModelProto`, inline or with external data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use pretext_models::io::atomic_write;
use prost::Message;

use crate::error::ExportError;
use crate::proto;
use crate::tensor::{Attr, Const};

/// Element type of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    F32,
    F16,
    /// Index inputs (token ids of [`pretext_models::Ops::gather_tokens`]); fp16 conversion leaves them alone.
    I64,
}

impl Elem {
    fn onnx(self) -> i32 {
        match self {
            Elem::F32 => proto::tensor_proto::DataType::Float as i32,
            Elem::F16 => proto::tensor_proto::DataType::Float16 as i32,
            Elem::I64 => proto::tensor_proto::DataType::Int64 as i32,
        }
    }
}

/// One dimension of a declared shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Sym(String),
}

/// A typed graph input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub elem: Elem,
    pub dims: Vec<Dim>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: &'static str,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<(String, Attr)>,
}

/// A graph: nodes in topological order, named constant initializers.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub inits: BTreeMap<String, Const>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
}

impl Graph {
    /// The node producing `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.outputs.iter().any(|o| o == tensor))
    }
    /// How many node inputs and graph outputs read `tensor`.
    pub fn use_count(&self, tensor: &str) -> usize {
        self.nodes.iter().flat_map(|n| &n.inputs).filter(|i| *i == tensor).count() + self.outputs.iter().filter(|o| o.name == tensor).count()
    }
    pub fn use_counts(&self) -> HashMap<&str, usize> {
        let mut m = HashMap::new();
        for i in self.nodes.iter().flat_map(|n| &n.inputs) {
            *m.entry(i.as_str()).or_default() += 1;
        }
        for o in &self.outputs {
            *m.entry(o.name.as_str()).or_default() += 1;
        }
        m
    }
    /// Renames a tensor everywhere: producer output, node inputs, graph outputs.
    pub fn rename_tensor(&mut self, old: &str, new: &str) {
        for n in &mut self.nodes {
            for t in n.inputs.iter_mut().chain(n.outputs.iter_mut()) {
                if t == old {
                    *t = new.to_string();
                }
            }
        }
        for o in self.outputs.iter_mut().chain(self.inputs.iter_mut()) {
            if o.name == old {
                o.name = new.to_string();
            }
        }
        if let Some(c) = self.inits.remove(old) {
            self.inits.insert(new.to_string(), c);
        }
    }
    /// Renames uses (node inputs only) of a tensor.
    pub fn rename_uses(&mut self, old: &str, new: &str) {
        for n in &mut self.nodes {
            for t in n.inputs.iter_mut() {
                if t == old {
                    *t = new.to_string();
                }
            }
        }
    }
    /// A tensor name not used yet, derived from `base`.
    pub fn fresh_name(&self, base: &str) -> String {
        let taken: HashSet<&str> =
            self.nodes.iter().flat_map(|n| n.outputs.iter().chain(std::iter::once(&n.name))).map(|s| s.as_str()).chain(self.inits.keys().map(|s| s.as_str())).chain(self.inputs.iter().map(|i| i.name.as_str())).collect();
        if !taken.contains(base) {
            return base.to_string();
        }
        (1..).map(|i| format!("{base}_{i}")).find(|n| !taken.contains(n.as_str())).expect("unbounded")
    }
    pub fn count_op(&self, op: &str) -> usize {
        self.nodes.iter().filter(|n| n.op == op).count()
    }
    /// Bytes of all initializers.
    pub fn init_bytes(&self) -> usize {
        self.inits.values().map(|c| c.byte_len()).sum()
    }
}

/// A model: graph plus opset, IR version and metadata props.
#[derive(Debug, Clone)]
pub struct Model {
    pub graph: Graph,
    pub opset: i64,
    pub ir_version: i64,
    pub producer_version: String,
    pub metadata: Vec<(String, String)>,
}

/// ONNX's protobuf limit: larger models must keep weights outside the `.onnx` file.
pub const PROTOBUF_LIMIT: u64 = 2_000_000_000;

fn attr_proto(name: &str, a: &Attr) -> proto::AttributeProto {
    use proto::attribute_proto::AttributeType as T;
    let mut p = proto::AttributeProto { name: Some(name.to_string()), ..Default::default() };
    match a {
        Attr::Int(v) => {
            p.i = Some(*v);
            p.r#type = Some(T::Int as i32);
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            p.r#type = Some(T::Ints as i32);
        }
        Attr::Float(v) => {
            p.f = Some(*v);
            p.r#type = Some(T::Float as i32);
        }
        Attr::Str(v) => {
            p.s = Some(v.as_bytes().to_vec());
            p.r#type = Some(T::String as i32);
        }
    }
    p
}

fn value_info(v: &ValueInfo) -> proto::ValueInfoProto {
    use proto::tensor_shape_proto::{dimension::Value, Dimension};
    let dims = v
        .dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Fixed(x) => Value::DimValue(*x),
                Dim::Sym(s) => Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    proto::ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: Some(proto::TypeProto {
            value: Some(proto::type_proto::Value::TensorType(proto::type_proto::Tensor {
                elem_type: Some(v.elem.onnx()),
                shape: Some(proto::TensorShapeProto { dim: dims }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn tensor_proto(name: &str, c: &Const) -> proto::TensorProto {
    use proto::tensor_proto::DataType as D;
    let dt = match c {
        Const::F32(_) => D::Float,
        Const::F16(_) => D::Float16,
        Const::I64(_) => D::Int64,
    };
    proto::TensorProto { name: Some(name.to_string()), dims: c.dims(), data_type: Some(dt as i32), raw_data: Some(c.raw_bytes()), ..Default::default() }
}

impl Model {
    /// The `ModelProto`, all weights inline.
    pub fn to_proto(&self) -> proto::ModelProto {
        let g = &self.graph;
        let nodes = g
            .nodes
            .iter()
            .map(|n| proto::NodeProto {
                name: Some(n.name.clone()),
                op_type: Some(n.op.to_string()),
                input: n.inputs.clone(),
                output: n.outputs.clone(),
                attribute: n.attrs.iter().map(|(k, a)| attr_proto(k, a)).collect(),
                ..Default::default()
            })
            .collect();
        let graph = proto::GraphProto {
            name: Some("pretext".into()),
            node: nodes,
            initializer: g.inits.iter().map(|(k, c)| tensor_proto(k, c)).collect(),
            input: g.inputs.iter().map(value_info).collect(),
            output: g.outputs.iter().map(value_info).collect(),
            ..Default::default()
        };
        proto::ModelProto {
            ir_version: Some(self.ir_version),
            opset_import: vec![proto::OperatorSetIdProto { domain: Some(String::new()), version: Some(self.opset) }],
            producer_name: Some("pretext".into()),
            producer_version: Some(self.producer_version.clone()),
            graph: Some(graph),
            metadata_props: self.metadata.iter().map(|(k, v)| proto::StringStringEntryProto { key: Some(k.clone()), value: Some(v.clone()) }).collect(),
            ..Default::default()
        }
    }

    /// Writes the model. When the initializers exceed `external_threshold`
    /// bytes, tensors of 1 KiB or more go to `<file>.data` beside it (the
    /// ONNX external-data form, `location` relative to the model). Returns
    /// the paths written.
    pub fn write(&self, path: &Path, external_threshold: u64) -> Result<Vec<PathBuf>, ExportError> {
        let werr = |reason: String| ExportError::Write { path: path.into(), reason };
        let mut p = self.to_proto();
        let mut written = vec![path.to_path_buf()];
        if self.graph.init_bytes() as u64 > external_threshold {
            let file = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| werr("no file name".into()))?;
            let data_name = format!("{file}.data");
            let data_path = path.with_file_name(&data_name);
            let mut blob = Vec::new();
            let graph = p.graph.as_mut().expect("graph");
            for t in &mut graph.initializer {
                let raw = t.raw_data.take().unwrap_or_default();
                if raw.len() < 1024 {
                    t.raw_data = Some(raw);
                    continue;
                }
                // 4 KiB alignment lets runtimes mmap the tensors.
                while blob.len() % 4096 != 0 {
                    blob.push(0);
                }
                let entry = |k: &str, v: String| proto::StringStringEntryProto { key: Some(k.into()), value: Some(v) };
                t.external_data = vec![entry("location", data_name.clone()), entry("offset", blob.len().to_string()), entry("length", raw.len().to_string())];
                t.data_location = Some(proto::tensor_proto::DataLocation::External as i32);
                blob.extend_from_slice(&raw);
            }
            atomic_write(&data_path, &blob).map_err(|e| ExportError::Write { path: data_path.clone(), reason: e.to_string() })?;
            written.push(data_path);
        }
        let bytes = p.encode_to_vec();
        if bytes.len() as u64 > PROTOBUF_LIMIT {
            return Err(werr(format!("{} bytes exceed the 2 GB protobuf limit", bytes.len())));
        }
        atomic_write(path, &bytes).map_err(|e| werr(e.to_string()))?;
        Ok(written)
    }
}
