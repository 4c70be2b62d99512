//! The carousel over real loopback UDP, through a lossy, reordering relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use mhc_transport::carousel::{
    bind_receiver, bind_sender, run_receiver, run_sender, Assembler, AssemblerConfig, Carousel,
    CarouselConfig, Event, LossyRelay, ObjectId, ObjectKind, RelayConfig, SenderOptions, UdpUrl,
};
use tokio::sync::{mpsc, oneshot};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn object(seed: u64, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    fastrand::Rng::with_seed(seed).fill(&mut bytes);
    bytes
}

/// A running receiver: its address, assembler, events and a stop switch.
struct Receiver {
    addr: SocketAddr,
    assembler: Arc<Mutex<Assembler>>,
    events: mpsc::Receiver<Event>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), mhc_transport::carousel::UdpError>>,
}

async fn start_receiver(addr: SocketAddr) -> Result<Receiver, Box<dyn std::error::Error>> {
    let socket = bind_receiver(addr).await?;
    let addr = socket.local_addr()?;
    let assembler = Arc::new(Mutex::new(Assembler::new(AssemblerConfig::default())?));
    let (events_tx, events) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let assembler = Arc::clone(&assembler);
        async move {
            run_receiver(
                &socket,
                move |_| Some(Arc::clone(&assembler)),
                events_tx,
                async {
                    let _ = stopped.await;
                },
            )
            .await
        }
    });
    Ok(Receiver {
        addr,
        assembler,
        events,
        stop,
        task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_cross_a_lossy_relay() -> TestResult {
    let mut receiver = start_receiver("127.0.0.1:0".parse()?).await?;
    let relay = LossyRelay::start(
        "127.0.0.1:0".parse()?,
        receiver.addr,
        RelayConfig {
            loss_percent: 15.0,
            reorder_percent: 10.0,
            reorder_max_delay: 8,
            seed: 99,
        },
    )?;

    // About 1.3 MB of objects: with 25 % repair a cycle is ~1.6 MB, 0.26 s at 50 Mbit/s.
    // Blocks of at most 256 symbols: unoptimised raptorq solves large blocks very slowly.
    let mut carousel = Carousel::new(CarouselConfig {
        max_block_symbols: 256,
        ..CarouselConfig::default()
    })?;
    let mut want = Vec::new();
    for (i, (kind, len)) in [
        (ObjectKind::Manifest, 2_000),
        (ObjectKind::Segment, 900_000),
        (ObjectKind::Segment, 400_000),
        (ObjectKind::Bulletin, 300),
    ]
    .into_iter()
    .enumerate()
    {
        want.push(carousel.insert(kind, object(i as u64, len))?);
    }
    want.sort();
    let carousel = Arc::new(Mutex::new(carousel));

    let url: UdpUrl = format!("udp://{}", relay.local_addr()).parse()?;
    let target = url.resolve().await?;
    let options = SenderOptions {
        rate_kbps: 50_000,
        ..SenderOptions::default()
    };
    let socket = bind_sender(target, &options).await?;
    let (stop_sender, sender_stopped) = oneshot::channel::<()>();
    let sender = tokio::spawn({
        let carousel = Arc::clone(&carousel);
        async move {
            run_sender(&socket, target, carousel, &options, async {
                let _ = sender_stopped.await;
            })
            .await
        }
    });

    let mut got = Vec::new();
    let deadline = tokio::time::sleep(Duration::from_secs(20));
    tokio::pin!(deadline);
    while got.len() < want.len() {
        tokio::select! {
            event = receiver.events.recv() => match event {
                Some(Event::Complete { id, bytes, .. }) => {
                    assert_eq!(ObjectId::of(&bytes), id);
                    got.push(id);
                }
                Some(Event::Corrupt { id, .. }) => panic!("{id} corrupt"),
                None => panic!("receiver stopped"),
            },
            () = &mut deadline => panic!(
                "timed out; incomplete: {:?}",
                receiver.assembler.lock().incomplete()
            ),
        }
    }
    got.sort();
    assert_eq!(got, want);

    let _ = stop_sender.send(());
    let stats = sender.await??;
    let _ = receiver.stop.send(());
    receiver.task.await??;
    let relayed = relay.stats();
    assert!(stats.cycles >= 1 && stats.datagrams > 0, "{stats:?}");
    assert_eq!(stats.send_errors, 0);
    assert!(relayed.dropped > 0 && relayed.reordered > 0, "{relayed:?}");
    assert!(relayed.bytes_in <= stats.bytes);
    // Bounded traffic: a handful of cycles at most.
    assert!(stats.bytes < 12_000_000, "{stats:?}");
    let assembled = receiver.assembler.lock().stats();
    assert_eq!(assembled.completed, 4);
    assert_eq!(assembled.malformed, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sender_respects_its_rate() -> TestResult {
    // A sink nobody reads: only the sender's counters matter.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let target = sink.local_addr()?;
    let mut carousel = Carousel::new(CarouselConfig::default())?;
    carousel.insert(ObjectKind::Segment, object(5, 500_000))?;
    let options = SenderOptions {
        rate_kbps: 4_000,
        ..SenderOptions::default()
    };
    let socket = bind_sender(target, &options).await?;
    let started = Instant::now();
    let run = Duration::from_millis(500);
    let stats = run_sender(
        &socket,
        target,
        Arc::new(Mutex::new(carousel)),
        &options,
        tokio::time::sleep(run),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let wire_bits = (stats.bytes + 28 * stats.datagrams) as f64 * 8.0;
    // Never faster than the rate plus the 10 ms burst (slower is possible on a busy machine).
    let allowed = 4_000_000.0 * elapsed + 2.0 * 1_260.0 * 8.0 + 5_000.0 * 8.0;
    assert!(wire_bits <= allowed, "{wire_bits} bits in {elapsed} s");
    assert!(stats.datagrams > 10, "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn empty_carousel_sends_nothing_and_stops() -> TestResult {
    let target: SocketAddr = "127.0.0.1:9".parse()?;
    let options = SenderOptions {
        idle_poll_ms: 5,
        ..SenderOptions::default()
    };
    let socket = bind_sender(target, &options).await?;
    let carousel = Arc::new(Mutex::new(Carousel::new(CarouselConfig::default())?));
    let stats = run_sender(
        &socket,
        target,
        carousel,
        &options,
        tokio::time::sleep(Duration::from_millis(50)),
    )
    .await?;
    assert_eq!((stats.cycles, stats.datagrams), (0, 0));
    Ok(())
}

/// Multicast on the loopback host. Hosts without a multicast route (some containers) cannot
/// join a group; the test then only checks that the failure is a clean error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multicast_group_on_one_host() -> TestResult {
    let group: SocketAddr = "239.255.42.99:0".parse()?;
    let mut receiver = match start_receiver(group).await {
        Ok(receiver) => receiver,
        Err(err) => {
            eprintln!("multicast unavailable here, skipped: {err}");
            return Ok(());
        }
    };
    let target: SocketAddr = format!("239.255.42.99:{}", receiver.addr.port()).parse()?;
    let mut carousel = Carousel::new(CarouselConfig::default())?;
    let id = carousel.insert(ObjectKind::Bulletin, b"to everyone".to_vec())?;
    let options = SenderOptions {
        rate_kbps: 1_000,
        multicast_ttl: 1,
        ..SenderOptions::default()
    };
    let socket = bind_sender(target, &options).await?;
    let carousel = Arc::new(Mutex::new(carousel));
    let sender = tokio::spawn(async move {
        run_sender(
            &socket,
            target,
            carousel,
            &options,
            tokio::time::sleep(Duration::from_secs(3)),
        )
        .await
    });
    match tokio::time::timeout(Duration::from_secs(3), receiver.events.recv()).await {
        Ok(Some(Event::Complete { id: got, .. })) => assert_eq!(got, id),
        other => eprintln!("no multicast delivery on this host, skipped: {other:?}"),
    }
    sender.abort();
    let _ = receiver.stop.send(());
    Ok(())
}
