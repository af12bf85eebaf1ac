//! Self-supervised methods behind one [`Method`] trait and one [`REGISTRY`].
//! A method is a small composition: a backbone, heads, a loss from
//! [`crate::loss`], optionally a momentum teacher ([`Method::momentum`]) and
//! state the loss owns (a queue, a center), which is checkpointed.
//!
//! Parameter names: the backbone keeps its plain torchvision/timm names,
//! heads live under `projection_head.*`/`prediction_head.*` (lightly's names),
//! so the backbone can be exported without remapping.
//!
//! Each step is checked against the method's reference (its `reference` line
//! in `docs/methods.md`) by `tests/step_equivalence.rs` and
//! `scripts/gen_method_fixtures.py`.
//!
//! # Adding a method
//!
//! A method is one file, `methods/<name>.rs`, plus one line in [`REGISTRY`]:
//!
//! 1. Declare it with [`method!`](crate::methods::method): name, aliases,
//!    summary, reference, optimizer defaults and its config fields (type,
//!    default, allowed range, help). The macro writes the typed `Config`
//!    (`deny_unknown_fields`), its defaults, its field table (from which
//!    `validate()`, the `pretext train` flags, the `config.toml` section and
//!    `docs/methods.md` are generated) and `pub static SPEC`.
//! 2. `impl Recipe for Config`: the augmentation pipeline (from
//!    `pretext_data::augment::Pipeline`), cross-field or backbone checks, and
//!    the builder.
//! 3. The method struct implements [`Method`]: `loss`, and when it has them,
//!    `momentum` (teacher/student pairs and tau schedule, applied by
//!    [`crate::train::Trainer::step`]), `frozen`, `after_step` and `state`.
//! 4. Add `&<name>::SPEC` to [`REGISTRY`], the loss to `loss.rs`, a fixture to
//!    `scripts/gen_method_fixtures.py` and a test to `tests/step_equivalence.rs`,
//!    then regenerate the docs (`UPDATE_DOCS=1 cargo nextest run -p
//!    pretext-trainer --test registry`).
//!
//! A method written against the old flat `MethodConfig` moves over by turning
//! its fields into the `config` block of [`method!`] and reading them from its
//! own `Config` in `new`.

/// The accessors of a method with one student store: `name`, `backbone`
/// (`self.backbone`) and `students` (`self.params`, no prefix); with
/// `teacher`, also `teacher` (`self.teacher`). Expands inside `impl Method`.
macro_rules! student_accessors {
    ($name:literal) => {
        fn name(&self) -> &'static str {
            $name
        }
        fn backbone(&self) -> &pretext_models::Backbone {
            &self.backbone
        }
        fn students(&self) -> Vec<(&'static str, &$crate::backend::Params)> {
            vec![("", &self.params)]
        }
    };
    ($name:literal, teacher) => {
        $crate::methods::student_accessors!($name);
        fn teacher(&self) -> Option<&$crate::backend::Params> {
            Some(&self.teacher)
        }
    };
}
pub(crate) use student_accessors;

/// Declares a method's registry entry and typed config in its own file:
///
/// ```ignore
/// method! {
///     name: "simclr", aliases: [], summary: "...", reference: "...",
///     optimizer: OptimizerDefaults::SGD,
///     config(d) {
///         /// Hidden width of the projection head (d: the backbone's embed dim).
///         proj_hidden: i64 = d.max(32), Range::at_least(1.0);
///     }
/// }
/// ```
///
/// Defaults are expressions of `d`, the backbone's embed dim. Expands to
/// `pub struct Config`, its `defaults(d)` and [`ConfigFields`] impl, and
/// `pub static SPEC: MethodSpec`.
macro_rules! method {
    (
        name: $name:literal, aliases: [$($alias:literal),*], summary: $summary:literal, reference: $reference:literal,
        optimizer: $opt:expr,
        config($d:ident) { $( $(#[doc = $help:literal])+ $field:ident: $ty:ty = $default:expr, $range:expr; )* }
    ) => {
        /// The method's settings (`[method]` in config.toml); see `docs/methods.md`.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            $( $(#[doc = $help])+ pub $field: $ty, )*
        }

        impl Config {
            /// Defaults for a backbone of embed dim `d`.
            #[allow(clippy::redundant_field_names)]
            pub fn defaults($d: i64) -> Self {
                let _ = $d;
                Self { $( $field: $default, )* }
            }
        }

        impl $crate::methods::ConfigFields for Config {
            const FIELDS: &'static [$crate::methods::Field] = &[$(
                $crate::methods::Field {
                    name: stringify!($field),
                    help: concat!($($help),+),
                    default: stringify!($default),
                    range: $range,
                    integer: <$ty as $crate::methods::FieldType>::INTEGER,
                },
            )*];
            fn spec() -> &'static $crate::methods::MethodSpec {
                &SPEC
            }
            fn value(&self, field: &str) -> Option<f64> {
                match field {
                    $( stringify!($field) => Some($crate::methods::FieldType::to_f64(&self.$field)), )*
                    _ => None,
                }
            }
            fn set_text(&mut self, field: &str, text: &str) -> Option<bool> {
                match field {
                    $( stringify!($field) => Some(match <$ty as $crate::methods::FieldType>::parse(text) {
                        Some(v) => { self.$field = v; true }
                        None => false,
                    }), )*
                    _ => None,
                }
            }
        }

        /// The registry entry (listed in `methods::REGISTRY`).
        pub static SPEC: $crate::methods::MethodSpec = $crate::methods::MethodSpec {
            name: $name,
            aliases: &[$($alias),*],
            summary: $summary,
            reference: $reference,
            optimizer: $opt,
            fields: <Config as $crate::methods::ConfigFields>::FIELDS,
            defaults: |d| $crate::methods::MethodConfig::from(Config::defaults(d)),
            parse: $crate::methods::parse_config::<Config>,
        };
    };
}
pub(crate) use method;

pub mod barlow_twins;
pub mod byol;
pub mod colorization;
pub mod context_encoder;
pub mod context_prediction;
pub mod counting;
pub mod cpc;
pub mod dino;
pub mod jigsaw;
pub mod mae;
pub mod moco;
pub mod npid;
pub mod pirl;
pub mod rotation;
pub mod simclr;
pub mod simsiam;
pub mod vicreg;
pub mod dcl;
pub mod moco_v3;
pub mod nnclr;
pub mod fastsiam;
pub mod tico;
pub mod swav;

use std::any::Any;
use std::fmt;

use pretext_data::augment::{Pipeline, Resolution};
use pretext_models::{Backbone, HeadSpec, MlpHead, ParamKind, ParamSpec, Vit};
use serde::de::{DeserializeOwned, Error as _};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tch::{Device, Tensor};

use crate::backend::{Params, TchOps};
use crate::optim::OptimizerKind;
use crate::schedule;

/// Every method, in the order `pretext train --help` and `docs/methods.md` list them.
pub static REGISTRY: &[&MethodSpec] = &[&simclr::SPEC, &moco::SPEC, &byol::SPEC, &simsiam::SPEC, &dino::SPEC, &mae::SPEC, &barlow_twins::SPEC, &vicreg::SPEC, &dcl::SPEC, &dcl::weighted::SPEC, &moco_v3::SPEC, &nnclr::SPEC, &fastsiam::SPEC, &tico::SPEC, &swav::SPEC, &rotation::SPEC, &jigsaw::SPEC, &npid::SPEC, &context_prediction::SPEC, &counting::SPEC, &pirl::SPEC, &context_encoder::SPEC, &cpc::SPEC, &colorization::SPEC];

/// A method's registry entry: what the CLI, the config file and the docs know of it.
pub struct MethodSpec {
    /// CLI and config name (`moco_v2`).
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// One line for `pretext train --help`.
    pub summary: &'static str,
    /// The paper and code the step follows (checked by `tests/step_equivalence.rs`).
    pub reference: &'static str,
    pub optimizer: OptimizerDefaults,
    pub fields: &'static [Field],
    /// The config with its defaults for a backbone of this embed dim.
    pub defaults: fn(i64) -> MethodConfig,
    /// The config from a `[method]` table without its `name`.
    pub parse: fn(toml::Table) -> Result<MethodConfig, String>,
}

impl MethodSpec {
    pub fn field(&self, name: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// A method's optimizer and schedule defaults (`pretext train` flags override them).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptimizerDefaults {
    pub kind: OptimizerKind,
    /// Peak learning rate of the warmup + cosine schedule.
    pub lr: f64,
    /// Weight decay (constant unless `final_weight_decay` differs).
    pub weight_decay: f64,
}

impl OptimizerDefaults {
    /// SGD with momentum 0.9, lr 0.06, weight decay 5e-4 (lightly's CIFAR-10 benchmarks).
    pub const SGD: Self = Self { kind: OptimizerKind::Sgd, lr: 0.06, weight_decay: 5e-4 };
    /// AdamW, lr 5e-4, weight decay 0.04 (DINO's and MAE's repos at batch 256).
    pub const ADAMW: Self = Self { kind: OptimizerKind::Adamw, lr: 5e-4, weight_decay: 0.04 };
}

/// One config field: the table `validate()`, the CLI flags and the docs are generated from.
#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub help: &'static str,
    /// The default as written in the method's file (`d` = the backbone's embed dim).
    pub default: &'static str,
    pub range: Range,
    pub integer: bool,
}

impl Field {
    /// `an integer in [1, inf)` / `a number in (0, 1]`.
    pub fn expected(&self) -> String {
        format!("{} in {}", if self.integer { "an integer" } else { "a number" }, self.range)
    }
    /// The CLI flag, `--queue-size`.
    pub fn flag(&self) -> String {
        format!("--{}", self.name.replace('_', "-"))
    }
}

/// Allowed values of a numeric setting, each end open or closed; non-finite values never pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub lo: f64,
    pub lo_open: bool,
    pub hi: f64,
    pub hi_open: bool,
}

impl Range {
    /// `[lo, inf)`.
    pub const fn at_least(lo: f64) -> Self {
        Self { lo, lo_open: false, hi: f64::INFINITY, hi_open: true }
    }
    /// `(0, inf)`.
    pub const fn positive() -> Self {
        Self { lo: 0.0, lo_open: true, hi: f64::INFINITY, hi_open: true }
    }
    /// `[lo, hi]`.
    pub const fn closed(lo: f64, hi: f64) -> Self {
        Self { lo, lo_open: false, hi, hi_open: false }
    }
    /// `[lo, hi)`.
    pub const fn half_open(lo: f64, hi: f64) -> Self {
        Self { lo, lo_open: false, hi, hi_open: true }
    }
    pub fn contains(&self, v: f64) -> bool {
        let lo = if self.lo_open { v > self.lo } else { v >= self.lo };
        let hi = if self.hi_open { v < self.hi } else { v <= self.hi };
        v.is_finite() && lo && hi
    }
    /// `Ok` or the error naming `field`, its value and this range.
    pub fn check(&self, field: &str, v: f64, integer: bool) -> Result<(), ConfigError> {
        if self.contains(v) {
            return Ok(());
        }
        Err(ConfigError::new(field, v, format!("{} in {self}", if integer { "an integer" } else { "a number" })))
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let num = |v: f64| if v.is_infinite() { "inf".to_string() } else { v.to_string() };
        write!(f, "{}{}, {}{}", if self.lo_open { '(' } else { '[' }, num(self.lo), num(self.hi), if self.hi_open { ')' } else { ']' })
    }
}

/// A setting refused before training: the field, its value and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field} = {value} is not allowed: expected {expected}")]
pub struct ConfigError {
    /// `method.temperature`, `batch_size`.
    pub field: String,
    pub value: String,
    pub expected: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, value: impl fmt::Display, expected: impl Into<String>) -> Self {
        Self { field: field.into(), value: value.to_string(), expected: expected.into() }
    }
}

/// The numeric types a config field can have.
pub trait FieldType: Sized {
    const INTEGER: bool;
    fn to_f64(&self) -> f64;
    fn parse(text: &str) -> Option<Self>;
}

macro_rules! field_type {
    ($($t:ty: $int:literal),*) => { $(
        impl FieldType for $t {
            const INTEGER: bool = $int;
            fn to_f64(&self) -> f64 {
                *self as f64
            }
            fn parse(text: &str) -> Option<Self> {
                text.trim().parse().ok()
            }
        }
    )* };
}
field_type!(i64: true, u64: true, usize: true, f64: false);

/// What [`method!`] generates for a config struct.
pub trait ConfigFields {
    const FIELDS: &'static [Field];
    fn spec() -> &'static MethodSpec;
    /// The field's value as f64 (`None`: no such field).
    fn value(&self, field: &str) -> Option<f64>;
    /// Parses `text` into the field: `None`: no such field, `Some(false)`: not a number of its type.
    fn set_text(&mut self, field: &str, text: &str) -> Option<bool>;
}

/// What a method's file writes by hand for its config.
pub trait Recipe: ConfigFields + Clone + fmt::Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The augmentation views of one image, for images of `size` px.
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline;
    /// Checks beyond each field's range: between fields, or against the backbone.
    fn check(&self, _backbone: &Backbone) -> Result<(), ConfigError> {
        Ok(())
    }
    /// The method over `backbone`, weights initialised from the current tch seed.
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError>;
}

/// The object-safe face of a [`Recipe`], behind [`MethodConfig`].
trait AnyConfig: fmt::Debug + Send + Sync {
    fn spec(&self) -> &'static MethodSpec;
    fn value(&self, field: &str) -> Option<f64>;
    fn set_text(&mut self, field: &str, text: &str) -> Option<bool>;
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError>;
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline;
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError>;
    fn to_json(&self) -> serde_json::Value;
    fn clone_box(&self) -> Box<dyn AnyConfig>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Recipe> AnyConfig for T {
    fn spec(&self) -> &'static MethodSpec {
        T::spec()
    }
    fn value(&self, field: &str) -> Option<f64> {
        ConfigFields::value(self, field)
    }
    fn set_text(&mut self, field: &str, text: &str) -> Option<bool> {
        ConfigFields::set_text(self, field, text)
    }
    fn check(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        Recipe::check(self, backbone)
    }
    fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        Recipe::pipeline(self, res, size)
    }
    fn build(&self, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
        Recipe::build(self, backbone, device)
    }
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
    fn clone_box(&self) -> Box<dyn AnyConfig> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One method's typed settings, whichever method: the `[method]` section of a
/// run's config.toml (`name` plus that method's own fields, nothing else).
#[derive(Debug)]
pub struct MethodConfig(Box<dyn AnyConfig>);

impl<T: Recipe> From<T> for MethodConfig {
    fn from(c: T) -> Self {
        Self(Box::new(c))
    }
}

impl Clone for MethodConfig {
    fn clone(&self) -> Self {
        Self(self.0.clone_box())
    }
}

impl PartialEq for MethodConfig {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.0.to_json() == other.0.to_json()
    }
}

impl MethodConfig {
    /// The defaults of method `name` (or an alias) for a backbone of embed dim `embed_dim`.
    pub fn defaults(name: &str, embed_dim: i64) -> Result<Self, ConfigError> {
        Ok((spec(name)?.defaults)(embed_dim))
    }
    pub fn spec(&self) -> &'static MethodSpec {
        self.0.spec()
    }
    pub fn name(&self) -> &'static str {
        self.spec().name
    }
    /// The typed config of method `T` (`None` for another method's).
    pub fn get<T: Recipe>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }
    /// A field's value as f64.
    pub fn value(&self, field: &str) -> Option<f64> {
        self.0.value(field)
    }
    /// Sets a field from text (a CLI flag); the value is checked by [`MethodConfig::validate`].
    pub fn set(&mut self, field: &str, text: &str) -> Result<(), ConfigError> {
        let spec = self.spec();
        let key = format!("method.{field}");
        match self.0.set_text(field, text) {
            Some(true) => Ok(()),
            Some(false) => Err(ConfigError::new(key, text, spec.field(field).map(Field::expected).unwrap_or_default())),
            None => Err(ConfigError::new(key, text, format!("no such setting for {}: its settings are {}", spec.name, spec.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")))),
        }
    }
    /// Resets the fields whose default depends on the embed dim (head sizes) to their defaults at `embed_dim`.
    pub fn resize_heads(&mut self, embed_dim: i64) {
        let (a, b, now) = ((self.spec().defaults)(1), (self.spec().defaults)(1 << 20), (self.spec().defaults)(embed_dim));
        for f in self.spec().fields {
            if a.value(f.name) != b.value(f.name) {
                if let Some(v) = now.value(f.name) {
                    let _ = self.0.set_text(f.name, &v.to_string());
                }
            }
        }
    }
    /// Every field in its range, then the method's own checks against `backbone`.
    pub fn validate(&self, backbone: &Backbone) -> Result<(), ConfigError> {
        for f in self.spec().fields {
            let v = self.value(f.name).unwrap_or(f64::NAN);
            f.range.check(&format!("method.{}", f.name), v, f.integer)?;
        }
        self.0.check(backbone)
    }
    /// The augmentation views of one image.
    pub fn pipeline(&self, res: Resolution, size: usize) -> Pipeline {
        self.0.pipeline(res, size)
    }
    /// Views the method consumes per image.
    pub fn num_views(&self) -> usize {
        self.pipeline(Resolution::Cifar, 32).views.len()
    }
}

impl Serialize for MethodConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let j = self.0.to_json();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", self.name())?;
        for f in self.spec().fields {
            m.serialize_entry(f.name, &j[f.name])?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for MethodConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Through a TOML table, which holds NaN and infinities (validated next, never dropped).
        let mut table: toml::Table = Deserialize::deserialize(d)?;
        let name = match table.remove("name") {
            Some(toml::Value::String(s)) => s,
            other => return Err(D::Error::custom(ConfigError::new("method.name", other.map(|v| v.to_string()).unwrap_or_else(|| "(missing)".into()), method_list()))),
        };
        let spec = spec(&name).map_err(D::Error::custom)?;
        (spec.parse)(table).map_err(D::Error::custom)
    }
}

/// `spec.parse` of a method: its typed config, every field required, no other.
pub fn parse_config<T: Recipe>(v: toml::Table) -> Result<MethodConfig, String> {
    match T::deserialize(toml::Value::Table(v)) {
        Ok(c) => Ok(c.into()),
        Err(e) => {
            let spec = T::spec();
            let fields = spec.fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ");
            let old = if e.to_string().contains("unknown field") {
                " (config files written before the method registry list every method's settings under [method]: such a file is refused; keep only this method's)"
            } else {
                ""
            };
            Err(format!("[method] of {}: {e}; its settings are exactly {fields}{old}", spec.name))
        }
    }
}

/// The registry entry of `name` or an alias (case, `-` and `_` ignored).
pub fn spec(name: &str) -> Result<&'static MethodSpec, ConfigError> {
    let key = name.to_ascii_lowercase().replace('-', "_");
    REGISTRY.iter().copied().find(|s| s.name == key || s.aliases.contains(&key.as_str())).ok_or_else(|| ConfigError::new("method.name", name, method_list()))
}

/// `one of simclr, moco_v2 (or moco, mocov2), ...`.
pub fn method_list() -> String {
    let names: Vec<String> = REGISTRY.iter().map(|s| if s.aliases.is_empty() { s.name.to_string() } else { format!("{} (or {})", s.name, s.aliases.join(", ")) }).collect();
    format!("one of {}", names.join(", "))
}

/// The CLI name of a method, accepting its aliases.
pub fn canonical(name: &str) -> Result<&'static str, ConfigError> {
    Ok(spec(name)?.name)
}

/// `docs/methods.md`, generated from [`REGISTRY`] (a test checks the committed file).
pub fn docs_markdown() -> String {
    let mut s = String::from("# Methods\n\nGenerated from the method registry (`trainer/src/methods/mod.rs`, one file per method); do not edit by hand: `UPDATE_DOCS=1 cargo nextest run -p pretext-trainer --test registry` rewrites it.\n\n");
    s += "`pretext train --method NAME` (aliases accepted); every setting below is a flag (`--queue-size 8192`) and a field of the `[method]` section of the run's `config.toml`. `d` is the backbone's embed dim (512 for resnet18 at width 64, 192 for vit-tiny); head sizes that depend on it follow `--width`.\n\n";
    s += "| method | aliases | summary | views | optimizer (lr, weight decay) |\n|---|---|---|---|---|\n";
    for m in REGISTRY {
        let o = &m.optimizer;
        let views = (m.defaults)(512).num_views();
        s += &format!("| `{}` | {} | {} | {views} | {:?} ({}, {}) |\n", m.name, m.aliases.join(", "), m.summary, o.kind, o.lr, o.weight_decay);
    }
    for m in REGISTRY {
        s += &format!("\n## `{}`\n\n{}\n\nReference: {}\n\n| setting | default | allowed | meaning |\n|---|---|---|---|\n", m.name, m.summary, m.reference);
        for f in m.fields {
            s += &format!("| `{}` | `{}` | {} | {} |\n", f.name, f.default, f.expected(), f.help.trim());
        }
    }
    s
}

/// Where in training a step is; schedules are pure functions of it.
#[derive(Debug, Clone, Copy)]
pub struct StepCtx {
    pub step: u64,
    pub total_steps: u64,
    /// `step / steps_per_epoch`: DINO's teacher temperature and last-layer freeze are per epoch.
    pub epoch: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{method} needs a {need} backbone")]
    Backbone { method: String, need: &'static str },
    #[error("{method} expects {expected} views, got {got}")]
    Views { method: String, expected: usize, got: usize },
}

/// A momentum teacher and the student it follows:
/// `teacher <- tau * teacher + (1 - tau) * student`, tau cosine-scheduled from
/// `tau` at step 0 to 1 at the last step (lightly's `cosine_schedule`).
pub struct Momentum<'a> {
    pub teacher: &'a Params,
    pub student: &'a Params,
    pub tau: f64,
    /// Before the loss (MoCo: the key encoder moves before computing the keys)
    /// or after the optimizer step (BYOL, DINO).
    pub before_loss: bool,
}

impl Momentum<'_> {
    pub fn tau_at(&self, ctx: &StepCtx) -> f64 {
        schedule::cosine(ctx.step, ctx.total_steps, self.tau, 1.0)
    }
}

/// One self-supervised method.
pub trait Method {
    fn name(&self) -> &'static str;
    fn backbone(&self) -> &Backbone;
    /// Trainable stores with the prefix their tensors carry in checkpoints.
    /// The first holds the backbone under its plain names.
    fn students(&self) -> Vec<(&'static str, &Params)>;
    /// The student's heads by export name, which is also their tensors'
    /// prefix in the student store (`projection_head`, `decoder`). Written to
    /// every checkpoint's `pretext.heads`; `pretext export --with-head NAME`
    /// rebuilds a head from it, so every head the method trains is listed.
    fn heads(&self) -> Vec<(String, HeadSpec)>;
    /// The momentum teacher, if any (same names as the student's).
    fn teacher(&self) -> Option<&Params> {
        None
    }
    /// Momentum pairs, applied by [`crate::train::Trainer::step`].
    fn momentum(&self) -> Vec<Momentum<'_>> {
        vec![]
    }
    /// Forward all views in train mode and return the loss.
    fn loss(&mut self, views: &[Tensor], ctx: &StepCtx) -> Result<Tensor, MethodError>;
    /// Trainable tensors (checkpoint names) the optimizer must leave alone
    /// this step, as if they had no gradient (DINO's `cancel_gradients_last_layer`).
    fn frozen(&self, _ctx: &StepCtx) -> Vec<String> {
        vec![]
    }
    /// After the optimizer step and the momentum updates: queue, center.
    fn after_step(&mut self, _ctx: &StepCtx) {}
    /// Fixes the random masking of the next step (MAE; a no-op elsewhere). For step-equivalence tests.
    fn set_mask_noise(&mut self, _noise: Tensor) {}
    /// The training-set index of each image of the next step's batch, (B,) int64 (NPID's memory bank; a no-op elsewhere).
    fn set_batch_indices(&mut self, _indices: Tensor) {}
    /// Loss state (queue, center): live handles, restored by copying into them.
    fn state(&self) -> Vec<(String, Tensor)> {
        vec![]
    }
}

/// Builds the configured method over a backbone, initialising weights from
/// the current tch seed; the config is validated first.
pub fn build(config: &MethodConfig, backbone: Backbone, device: Device) -> Result<Box<dyn Method>, MethodError> {
    config.validate(&backbone)?;
    config.0.build(backbone, device)
}

/// Runs `f` once per run of consecutive views of one size, concatenated along
/// the batch, and splits its output back per view (DINO's `MultiCropWrapper`:
/// global crops together, local crops together).
pub(crate) fn multi_crop(views: &[Tensor], mut f: impl FnMut(&Tensor) -> Tensor) -> Vec<Tensor> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < views.len() {
        let mut j = i + 1;
        while j < views.len() && views[j].size() == views[i].size() {
            j += 1;
        }
        let y = f(&Tensor::cat(&views[i..j], 0));
        out.extend(y.chunk((j - i) as i64, 0));
        i = j;
    }
    out
}

/// The backbone as it runs on `side`-px inputs: a ViT at another resolution
/// gets resampled position embeddings (DINO's local crops).
pub(crate) fn at_side(backbone: &Backbone, side: i64) -> std::borrow::Cow<'_, Backbone> {
    match backbone {
        Backbone::Vit(v) if v.config.img_size != side => std::borrow::Cow::Owned(Backbone::Vit(Vit::new(v.config.clone().at_resolution(side)))),
        b => std::borrow::Cow::Borrowed(b),
    }
}

pub(crate) fn specs(backbone: &Backbone, heads: &[&MlpHead]) -> Vec<ParamSpec> {
    let mut s = backbone.params();
    for h in heads {
        s.extend(h.params());
    }
    s
}

pub(crate) fn check_views(method: &str, views: &[Tensor], expected: usize) -> Result<(), MethodError> {
    if views.len() < expected {
        return Err(MethodError::Views { method: method.into(), expected, got: views.len() });
    }
    Ok(())
}

/// Backbone features then a head, in train mode.
pub(crate) fn embed(backbone: &Backbone, head: &MlpHead, params: &Params, x: &Tensor) -> Tensor {
    let mut o = TchOps::new(params, true);
    let f = backbone.forward_features(&mut o, x);
    head.forward(&mut o, &f)
}

/// `teacher <- tau * teacher + (1 - tau) * student` over the teacher's
/// trainable tensors (solo-learn's `MomentumUpdater`); BatchNorm buffers of the
/// teacher follow its own forward passes, as in lightly's `update_momentum`.
pub fn ema_update(teacher: &Params, student: &Params, tau: f64) {
    tch::no_grad(|| {
        for (spec, t) in teacher.all() {
            if !matches!(spec.kind, ParamKind::Weight | ParamKind::NoDecay) {
                continue;
            }
            let s = student.get(&spec.name).unwrap_or_else(|| panic!("student lacks teacher tensor '{}'", spec.name));
            let mut t = t.shallow_clone();
            let _ = t.g_mul_scalar_(tau);
            let _ = t.g_add_(&(s * (1.0 - tau)));
        }
    });
}

/// A frozen copy of the student's tensors named in `specs`.
pub(crate) fn momentum_copy(student: &Params, specs: Vec<ParamSpec>, device: Device) -> Params {
    let t = Params::new(specs, device);
    // Channels-last like the students (`copy_` keeps the destination's layout).
    t.use_channels_last();
    tch::no_grad(|| {
        for (s, dst) in t.all() {
            let mut dst = dst.shallow_clone();
            dst.copy_(student.get(&s.name).expect("teacher spec missing in student"));
        }
    });
    t
}

/// A FIFO of keys (MoCo's queue, a memory bank).
pub struct Queue {
    pub keys: Tensor,
    pub ptr: Tensor,
}

impl Queue {
    /// Random unit rows, as in MoCo's initialisation.
    pub fn new(size: i64, dim: i64, device: Device) -> Self {
        let keys = crate::loss::l2_normalize(&Tensor::randn([size, dim], (tch::Kind::Float, device)));
        Self { keys, ptr: Tensor::zeros([1], (tch::Kind::Int64, device)) }
    }

    /// Replaces the oldest rows with `k` (wrapping around).
    pub fn push(&mut self, k: &Tensor) {
        let n = self.keys.size()[0];
        let b = k.size()[0];
        let p = self.ptr.int64_value(&[0]);
        tch::no_grad(|| {
            let idx = (Tensor::arange(b, (tch::Kind::Int64, k.device())) + p).remainder(n);
            let _ = self.keys.index_copy_(0, &idx, &k.detach());
            let _ = self.ptr.fill_((p + b) % n);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    /// Runs of one size go through together; each view gets its own rows back, in order.
    #[test]
    fn multi_crop_groups_runs_of_one_size() {
        let sides = [8, 8, 4, 4, 4, 8];
        let views: Vec<Tensor> = sides.iter().enumerate().map(|(i, &s)| Tensor::full([2, 3, s, s], i as f64, (Kind::Float, Device::Cpu))).collect();
        let mut calls = Vec::new();
        let out = multi_crop(&views, |x| {
            calls.push(x.size());
            x.flatten(1, -1)
        });
        assert_eq!(calls, vec![vec![4, 3, 8, 8], vec![6, 3, 4, 4], vec![2, 3, 8, 8]]);
        assert_eq!(out.len(), views.len());
        for (o, v) in out.iter().zip(&views) {
            assert!(o.equal(&v.flatten(1, -1)));
        }
    }
}
