//! Media I/O shared by the codecs.

pub mod audio;
pub mod picture;
