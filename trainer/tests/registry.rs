//! The method registry: the generated docs are committed and current, every
//! method's defaults are valid, every field refuses values outside its range
//! (NaN included) naming the field and the range, and a method's `[method]`
//! section round-trips through TOML with nothing but its own fields.

use pretext_models::{Backbone, BackboneConfig};
use pretext_trainer::methods::{self, MethodConfig, REGISTRY};
use pretext_trainer::train::TrainConfig;

fn backbone_for(method: &str) -> Backbone {
    Backbone::new(&BackboneConfig::from_name(if method == "mae" { "vit-tiny-cifar" } else { "resnet18-cifar" }).unwrap())
}

#[test]
fn docs_methods_md_is_generated_from_the_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/methods.md");
    let want = methods::docs_markdown();
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let got = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(got == want, "{} differs from the registry: run UPDATE_DOCS=1 cargo nextest run -p pretext-trainer --test registry", path.display());
}

#[test]
fn defaults_validate_and_names_and_aliases_resolve() {
    for m in REGISTRY {
        let b = backbone_for(m.name);
        let c = (m.defaults)(b.embed_dim());
        c.validate(&b).unwrap_or_else(|e| panic!("{}: defaults refused: {e}", m.name));
        assert_eq!(methods::canonical(m.name).unwrap(), m.name);
        for a in m.aliases {
            assert_eq!(methods::canonical(a).unwrap(), m.name);
        }
        assert_eq!(methods::canonical(&m.name.to_uppercase().replace('_', "-")).unwrap(), m.name);
        assert!(!m.summary.is_empty() && !m.reference.is_empty() && !m.fields.is_empty());
    }
    let e = methods::canonical("nope").unwrap_err().to_string();
    assert!(e.contains("method.name = nope") && e.contains("moco_v2 (or moco, mocov2)"), "{e}");
    assert_eq!(methods::canonical("MoCo").unwrap(), "moco_v2");
}

/// Each field, set just outside each finite end of its range and to NaN, is
/// refused by `validate` with `method.<field>`, the value and the range.
#[test]
fn every_field_refuses_values_outside_its_range() {
    let mut tried = 0;
    for m in REGISTRY {
        let b = backbone_for(m.name);
        for f in m.fields {
            let r = f.range;
            let step = if f.integer { 1.0 } else { 1e-9 };
            let mut bad = vec![];
            if r.lo.is_finite() {
                bad.push(if r.lo_open { r.lo } else { r.lo - step });
            }
            if r.hi.is_finite() {
                bad.push(if r.hi_open { r.hi } else { r.hi + step });
            }
            for v in bad {
                let mut c = (m.defaults)(b.embed_dim());
                let text = if f.integer { format!("{}", v as i64) } else { format!("{v}") };
                let e = match c.set(f.name, &text) {
                    // An unsigned field cannot even hold -1: refused when parsed.
                    Err(e) => e,
                    Ok(()) => c.validate(&b).expect_err(&format!("{}.{} = {text} accepted", m.name, f.name)),
                };
                let msg = e.to_string();
                assert!(msg.contains(&format!("method.{} = {text}", f.name)) && msg.contains(&r.to_string()), "{}: {msg}", m.name);
                tried += 1;
            }
            if !f.integer {
                let mut c = (m.defaults)(b.embed_dim());
                c.set(f.name, "NaN").unwrap();
                let msg = c.validate(&b).unwrap_err().to_string();
                assert!(msg.contains(&format!("method.{} = NaN", f.name)), "{msg}");
                tried += 1;
            }
        }
    }
    assert!(tried > 30, "{tried} cases");
}

#[test]
fn method_checks_between_fields_and_against_the_backbone() {
    let vit = backbone_for("mae");
    let mut c = MethodConfig::defaults("mae", vit.embed_dim()).unwrap();
    c.set("decoder_heads", "3").unwrap();
    let e = c.validate(&vit).unwrap_err().to_string();
    assert_eq!(e, "method.decoder_heads = 3 is not allowed: expected a divisor of method.decoder_dim = 128");
    // vit-tiny-cifar has 64 patches: 0.995 keeps none of them.
    let mut c = MethodConfig::defaults("mae", vit.embed_dim()).unwrap();
    c.set("mask_ratio", "0.995").unwrap();
    let e = c.validate(&vit).unwrap_err().to_string();
    assert!(e.contains("method.mask_ratio = 0.995") && e.contains("64 patches"), "{e}");
    let e = c.validate(&backbone_for("simclr")).unwrap_err().to_string();
    assert!(e.contains("a ViT"), "{e}");
    // A field another method has is named with the settings this one has.
    let mut c = MethodConfig::defaults("simclr", 512).unwrap();
    let e = c.set("queue_size", "10").unwrap_err().to_string();
    assert!(e.contains("no such setting for simclr") && e.contains("temperature"), "{e}");
    let e = c.set("temperature", "warm").unwrap_err().to_string();
    assert_eq!(e, "method.temperature = warm is not allowed: expected a number in (0, inf)");
}

#[test]
fn method_sections_round_trip_and_refuse_other_fields() {
    for m in REGISTRY {
        let b = backbone_for(m.name);
        let mut tc = TrainConfig::defaults(m.name, if m.name == "mae" { "vit-tiny-cifar" } else { "resnet18-cifar" }).unwrap();
        tc.data = "data".into();
        let text = toml::to_string(&tc).unwrap();
        let back: TrainConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, tc, "{}: {text}", m.name);
        let section: toml::Table = toml::from_str::<toml::Table>(&text).unwrap()["method"].as_table().unwrap().clone();
        let mut keys: Vec<&str> = section.keys().map(|k| k.as_str()).collect();
        keys.sort();
        let mut want: Vec<&str> = m.fields.iter().map(|f| f.name).chain(["name"]).collect();
        want.sort();
        assert_eq!(keys, want, "{}", m.name);
        back.method.validate(&b).unwrap();
        assert_eq!(back.method.name(), m.name);
    }
    // A field of another method, and the flat section written before the registry, are refused.
    let mut tc = TrainConfig::defaults("simclr", "resnet18-cifar").unwrap();
    tc.data = "data".into();
    let text = toml::to_string(&tc).unwrap().replace("temperature = 0.5", "temperature = 0.5\nqueue_size = 4096");
    let e = toml::from_str::<TrainConfig>(&text).unwrap_err().to_string();
    assert!(e.contains("unknown field `queue_size`") && e.contains("before the method registry") && e.contains("proj_hidden, proj_out, temperature"), "{e}");
    let text = toml::to_string(&tc).unwrap().replace("temperature = 0.5", "");
    let e = toml::from_str::<TrainConfig>(&text).unwrap_err().to_string();
    assert!(e.contains("missing field `temperature`"), "{e}");
    let text = toml::to_string(&tc).unwrap().replace("name = \"simclr\"", "name = \"simclr2\"");
    let e = toml::from_str::<TrainConfig>(&text).unwrap_err().to_string();
    assert!(e.contains("method.name = simclr2 is not allowed: expected one of simclr,"), "{e}");
    let text = toml::to_string(&tc).unwrap().replace("epochs = 10", "epochs = 10\nepoch = 3");
    let e = toml::from_str::<TrainConfig>(&text).unwrap_err().to_string();
    assert!(e.contains("unknown field `epoch`"), "{e}");
}

/// Head sizes that depend on the embed dim follow it; the others keep their value.
#[test]
fn resize_heads_changes_only_embed_dim_fields() {
    let mut c = MethodConfig::defaults("byol", 512).unwrap();
    c.set("tau", "0.9").unwrap();
    c.resize_heads(32);
    assert_eq!((c.value("proj_hidden"), c.value("proj_out"), c.value("tau")), (Some(128.0), Some(128.0), Some(0.9)));
    let mut c = MethodConfig::defaults("mae", 192).unwrap();
    c.set("decoder_dim", "64").unwrap();
    c.resize_heads(32);
    assert_eq!(c.value("decoder_dim"), Some(64.0));
}
