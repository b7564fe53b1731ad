#![no_std]
// Empty on purpose: the programs live in the `netfast` binary target. This library
// target only lets `netfast` name this crate as a build-dependency, so cargo rebuilds
// the loader when the datapath changes (the aya-template layout).
