//! A proxy on a controller that predates `Policy.Sync` (a rolling upgrade): it is told
//! UNIMPLEMENTED, falls back to `Policy.Watch` + `Policy.Ack`, and stays enforced.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use support::*;

/// A controller from before `Policy.Sync`: serves Identity and Policy.Watch/Ack by
/// forwarding them to the real controller (Watch and Ack as the workload, with that
/// workload's credentials), and answers Sync as such a controller does: UNIMPLEMENTED.
mod older {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use tonic::{Request, Response, Status, Streaming, transport::Channel};
    use vigil_api::pb::{
        self, identity_client::IdentityClient, identity_server::IdentityServer,
        policy_client::PolicyClient, policy_server::PolicyServer,
    };

    /// What the proxy asked of it.
    #[derive(Default, Debug)]
    pub(super) struct Calls {
        pub(super) sync: AtomicUsize,
        pub(super) watch: AtomicUsize,
        pub(super) ack: AtomicUsize,
    }

    struct Identity(IdentityClient<Channel>);
    struct Policy(PolicyClient<Channel>, Arc<Calls>);

    #[tonic::async_trait]
    impl pb::identity_server::Identity for Identity {
        async fn certify(
            &self,
            req: Request<pb::CertifyRequest>,
        ) -> Result<Response<pb::CertifyResponse>, Status> {
            self.0.clone().certify(req.into_inner()).await
        }
    }

    #[tonic::async_trait]
    impl pb::policy_server::Policy for Policy {
        type WatchStream = Streaming<pb::Snapshot>;
        type SyncStream = Streaming<pb::Snapshot>;

        async fn watch(
            &self,
            req: Request<pb::WatchRequest>,
        ) -> Result<Response<Self::WatchStream>, Status> {
            self.1.watch.fetch_add(1, Ordering::SeqCst);
            self.0.clone().watch(req.into_inner()).await
        }

        async fn ack(
            &self,
            req: Request<pb::AckRequest>,
        ) -> Result<Response<pb::AckResponse>, Status> {
            self.1.ack.fetch_add(1, Ordering::SeqCst);
            self.0.clone().ack(req.into_inner()).await
        }

        async fn resolve(
            &self,
            _: Request<pb::ResolveRequest>,
        ) -> Result<Response<pb::ResolveResponse>, Status> {
            Err(Status::unimplemented("not in this test"))
        }

        async fn sync(
            &self,
            _: Request<Streaming<pb::SyncRequest>>,
        ) -> Result<Response<Self::SyncStream>, Status> {
            self.1.sync.fetch_add(1, Ordering::SeqCst);
            Err(Status::unimplemented(
                "Policy.Sync is not served by this controller",
            ))
        }
    }

    /// Serves on loopback with `server` credentials; forwards with `anonymous` (Identity)
    /// and `workload` (Policy) channels to the real controller.
    pub(super) async fn serve(
        server: &vigil_cert_authority::creds::Credentials,
        anonymous: Channel,
        workload: Channel,
    ) -> (std::net::SocketAddr, Arc<Calls>) {
        let config = Arc::new(
            vigil_cert_authority::tls::control_server_config(
                server,
                vigil_cert_authority::tls::provider(),
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                });
            }
        });
        let calls = Arc::new(Calls::default());
        let router = tonic::transport::Server::builder()
            .add_service(IdentityServer::new(Identity(IdentityClient::new(
                anonymous,
            ))))
            .add_service(PolicyServer::new(Policy(
                PolicyClient::new(workload),
                calls.clone(),
            )));
        tokio::spawn(router.serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)));
        (addr, calls)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_falls_back_to_watch_and_ack_on_a_controller_without_sync() {
    use std::sync::atomic::Ordering;

    let plane = plane().await;
    let controller_id = vigil_cert_authority::SpiffeId::parse(&format!(
        "spiffe://{TD}/ns/vigil-system/sa/vigil-controller"
    ))
    .unwrap();
    let server = creds_for_id(&plane, &controller_id);
    let web = creds_for(&plane, "web");
    let (old, calls) = older::serve(
        &server,
        channel(&plane, None).await,
        channel(&plane, Some(&web)).await,
    )
    .await;
    let proxy = vigil_proxy::testing::Loopback::new()
        .controller(old, "shop/web", &plane.bundle_file(), &plane.token("web"))
        .log(vigil_proxy::access_log::AccessLog::off())
        .start()
        .await
        .unwrap();

    // The proxy asked for Sync, was told UNIMPLEMENTED, and watched and acked instead.
    eventually(
        15,
        "web's proxy ready on the older controller",
        async || {
            http_get(proxy.admin, "/ready")
                .await
                .is_ok_and(|r| r.0 == http::StatusCode::OK)
        },
    )
    .await;
    eventually(10, "acked by unary Ack", async || {
        status_of(&plane, "web").await["up_to_date"] == true
    })
    .await;
    assert!(calls.sync.load(Ordering::SeqCst) >= 1, "{calls:?}");
    assert_eq!(calls.watch.load(Ordering::SeqCst), 1, "{calls:?}");
    assert!(calls.ack.load(Ordering::SeqCst) >= 1, "{calls:?}");

    // Changes keep flowing over Watch and are acked.
    let acks = calls.ack.load(Ordering::SeqCst);
    let g0 = status_of(&plane, "web").await["applied"].as_u64().unwrap();
    plane.write("allow.yaml", &allow("web-to-orders", "web", "orders", ""));
    eventually(10, "the change acked over Ack", async || {
        let s = status_of(&plane, "web").await;
        calls.ack.load(Ordering::SeqCst) > acks
            && s["up_to_date"] == true
            && s["applied"].as_u64().unwrap_or(0) > g0
    })
    .await;
    assert_eq!(
        calls.watch.load(Ordering::SeqCst),
        1,
        "one stream throughout"
    );
}
