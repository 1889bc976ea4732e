//! Policy as it arrives from the controller: protobuf bytes -> `ProxyPolicy` -> compiled.
//! Never panics; a policy that converts converts back to the same message shape and
//! round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use vigil_api::pb;
use vigil_policy::{Policy, ProxyPolicy};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = pb::WorkloadPolicy::decode(data) else {
        return;
    };
    let Ok(model) = ProxyPolicy::try_from(msg) else {
        return;
    };
    let again = ProxyPolicy::try_from(pb::WorkloadPolicy::from(&model)).expect("round trip");
    assert_eq!(again, model);
    let _ = Policy::compile(model);
});
