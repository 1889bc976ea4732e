//! The image archives of `make images`, read and run by others: their configuration
//! against the chart, the injector and the Dockerfiles (read with our reader and with
//! skopeo), and loaded into a real Docker daemon and run there. The real-node suite
//! (`tests/cluster`) imports them into containerd and runs the mesh from them.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

mod contract;
mod docker;

use vigil_e2e::{k8s, netns};

#[test]
fn the_images_match_the_chart_the_injector_and_the_dockerfiles() {
    let bin = match k8s::binaries() {
        Ok(b) => b,
        Err(e) if std::env::var_os("VIGIL_SKIP_K8S_TESTS").is_some() => {
            eprintln!("skipped: no helm ({e}) and VIGIL_SKIP_K8S_TESTS is set");
            return;
        }
        Err(e) => {
            panic!("{e}\nhelm renders the chart: run e2e/k8s/testbin/build.sh (`make test` does)")
        }
    };
    contract::check(&bin);
}

#[test]
fn the_archives_load_into_docker_and_run() {
    if !netns::root_or_skip("the_archives_load_into_docker_and_run") {
        return;
    }
    docker::load_and_run();
}
