//! Malformed user files are errors naming the file, tensor and shape, never panics:
//! `.npy` headers whose shape overflows, galleries with wrong shapes, dtypes or classes.
use std::collections::HashMap;
use std::path::Path;

use ndarray::Array2;
use pretext_runtime::{npy, Gallery};
use safetensors::tensor::{Dtype, TensorView};

#[test]
fn npy_with_an_overflowing_shape_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.npy");
    let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }";
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend([0u8; 8]);
    std::fs::write(&p, &bytes).unwrap();
    let e = npy::read_f32(&p).unwrap_err().to_string();
    assert!(e.contains("huge.npy") && e.contains("needs more than usize::MAX bytes, found 8"), "{e}");
}

/// A gallery file with these tensors and the metadata of a valid one, `classes` replaced.
fn write_gallery(dir: &Path, name: &str, features: (&[usize], &[f32]), labels: (Dtype, &[usize], &[u8]), classes: &str) -> std::path::PathBuf {
    let good = dir.join("good.safetensors");
    Gallery::new(Array2::from_elem((2, 3), 1.0), vec![0, 1], vec!["a".into(), "b".into()], "ab12".into(), "m.onnx".into()).unwrap().save(&good).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta: HashMap<String, String> = header.metadata().clone().unwrap();
    meta.insert("classes".into(), classes.into());
    meta.insert("embed_dim".into(), features.0.last().unwrap().to_string());
    let fb: Vec<u8> = features.1.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![("features", TensorView::new(Dtype::F32, features.0.to_vec(), &fb).unwrap()), ("labels", TensorView::new(labels.0, labels.1.to_vec(), labels.2).unwrap())];
    let p = dir.join(name);
    std::fs::write(&p, safetensors::serialize(tensors, Some(meta)).unwrap()).unwrap();
    p
}

#[test]
fn galleries_with_wrong_shapes_dtypes_or_classes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let labels = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let two = labels(&[0, 1]);
    let ok = write_gallery(d, "ok.safetensors", (&[2, 3], &[1.0; 6]), (Dtype::I64, &[2], &two), r#"["a","b"]"#);
    assert_eq!(Gallery::load(&ok).unwrap().len(), 2);

    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        (write_gallery(d, "rank3.safetensors", (&[2, 3, 1], &[1.0; 6]), (Dtype::I64, &[2], &two), r#"["a","b"]"#), "tensor 'features' is F32 [2, 3, 1]; expected F32 [N, D]"),
        (write_gallery(d, "rows.safetensors", (&[3, 2], &[1.0; 6]), (Dtype::I64, &[2], &two), r#"["a","b"]"#), "tensor 'labels' is I64 [2]; expected I64 [3]"),
        (write_gallery(d, "dtype.safetensors", (&[2, 3], &[1.0; 6]), (Dtype::I32, &[4], &two), r#"["a","b"]"#), "tensor 'labels' is I32 [4]; expected I64 [2]"),
        (write_gallery(d, "range.safetensors", (&[2, 3], &[1.0; 6]), (Dtype::I64, &[2], &labels(&[0, 2])), r#"["a","b"]"#), "label 2 out of range for 2 classes"),
        (write_gallery(d, "empty.safetensors", (&[0, 3], &[]), (Dtype::I64, &[0], &[]), "[]"), "metadata 'classes' = \"[]\": empty"),
    ];
    for (p, want) in cases {
        let e = Gallery::load(&p).unwrap_err().to_string();
        let file = p.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(file) && e.contains(want), "{file}: {e}");
    }
    // A gallery built in memory with no classes is refused too (a vote over none would panic).
    let e = Gallery::new(Array2::zeros((0, 3)), vec![], vec![], String::new(), String::new()).unwrap_err().to_string();
    assert!(e.contains("at least one class"), "{e}");
}
