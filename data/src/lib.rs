//! pretext data: datasets, decoding caches, preprocessing and augmentation.
//! Libtorch-free; shared by the trainer and the runtime.
//!
//! [`Dataset::open`] sniffs a path (directory, `.tar.gz`/`.tgz`/`.tar`, or a
//! file standing for its directory) and loads one of:
//! - image folders `<split>/<class>/*.jpg|png` (or `<class>/*` as split `all`);
//! - the CIFAR-10 / CIFAR-100 binary release;
//! - MNIST / Fashion-MNIST IDX files, gzipped or not;
//! - Pascal VOC detection sets, and the `images/` + `annotations/` +
//!   `{split}_labels.csv` detection layout.
//!
//! Decoded images go to a cache (see [`default_cache_dir`]) keyed by the
//! source's checksum, so later opens skip decoding.
//!
//! # Bad input policy
//! Errors (a [`DataError`] naming the file): broken XML, an object without name or box, a wrong IDX magic or size, a
//! CIFAR file of the wrong length or with an out-of-range label, an object
//! of a class outside [`OpenOptions::classes`], an image or annotation listed
//! by a split file but missing.
//! Counted skips (listed by [`Dataset::skipped`]): detection boxes with zero
//! area or inverted corners (`xmax <= xmin` or `ymax <= ymin`); the image
//! itself is kept. A corrupt cache file is never trusted: it is rebuilt.
//! Truncated or corrupt JPEG/PNG files (the decoder is strict, see
//! [`preprocess::decode_bytes`]): by [`OpenOptions::on_bad_image`], an error
//! naming every one ([`DataError::Unreadable`], the default) or left out with
//! their labels and boxes and listed by [`Dataset::unreadable`].
//!
//! # Use
//! ```no_run
//! use pretext_data::{Dataset, OpenOptions};
//! let d = Dataset::open("../shared/data/cifar10-jpg.tar.gz", &OpenOptions::default())?;
//! let train = d.split("train").expect("a train split");
//! // Same-sized images: one (N, H, W, 3) u8 array and N labels.
//! let (pixels, [n, h, w, c]) = train.images_nhwc().expect("uniform size");
//! let labels = train.labels();
//! assert_eq!((pixels.len(), labels.len()), (n * h * w * c, n));
//! // Any split, image by image (detection sets: boxes too).
//! let first = train.image(0);
//! println!("{} {}x{} {:?}", d.classes()[labels[0] as usize], first.width, first.height, train.boxes(0));
//! # Ok::<(), pretext_data::DataError>(())
//! ```

mod cache;
mod dataset;
mod decode;
mod error;
pub mod font;
mod formats;
pub mod inspect;
pub mod progress;
mod source;
mod voc;

pub mod augment;
pub mod preprocess;

pub use dataset::{default_cache_dir, BBox, CacheStatus, Dataset, Format, ImageRef, OnBadImage, OpenOptions, ProgressFn, Skip, SplitView, Task, Unreadable};
pub use error::{DataError, Result};
pub use source::sample_images;
