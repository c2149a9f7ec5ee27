//! Datasets, losses, training loops and evaluation (arrives with the first trainable codec).
#![deny(missing_docs)]
