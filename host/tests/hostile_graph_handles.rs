//! A hostile guest's graphs, graph nodes, executable graphs, memory pools and link states (issue
//! 11, attack class 3; `hostile_handles.rs` has streams, events, functions and modules). The
//! host's gate (`host/src/dispatch/gate.rs`) admits only the handles the driver gave this client,
//! node arrays element by element, and answers anything else with `CUDA_ERROR_INVALID_HANDLE`
//! before the driver sees it; the same client's next calls still work. A legitimate client's
//! graph flow (capture, queries, instantiation, update, launch, destruction) passes the gate.
//!
//! The fake driver (`fake_driver/graphs.c`) takes any handle value and succeeds, so every
//! refusal here is the gate's; its log names each handle that reached it.

mod support;

use protocol::{Decoder, Encoder};
use support::wire::{request, RawGuest};
use support::{FakeDriver, Host};

const INVALID_HANDLE: u32 = 400;
const NOT_SUPPORTED: u32 = 801;
const GRAPH_EXEC_UPDATE_FAILURE: u32 = 910;
const EMPTY_NODE: u32 = 5;

fn start_host(tag: &str) -> Host {
    Host::on_region(tag)
        .driver(FakeDriver::Graphs)
        .region_size(16 << 20)
        .log_driver_calls()
        .start()
}

/// A call with arguments written by `args`: the result code and the response body.
fn call_with(guest: &mut RawGuest, id: u32, args: impl FnOnce(&mut Encoder<'_>)) -> (u32, Vec<u8>) {
    guest.call_raw(&request(id, args))
}

/// A call whose arguments are all `u64` values (handles, sizes): its result code.
fn call(guest: &mut RawGuest, id: u32, args: &[u64]) -> u32 {
    guest.call(id, args, None).0
}

/// The handle a successful call wrote first in its response.
fn handle_of((rc, body): (u32, Vec<u8>), what: &str) -> u64 {
    assert_eq!(rc, 0, "{what}");
    Decoder::new(&body).get().expect(what)
}

/// A generated `cuXCreate(&handle, u32 flags)`.
fn create(guest: &mut RawGuest, id: u32) -> u64 {
    handle_of(
        call_with(guest, id, |enc| {
            enc.put(1u8);
            enc.put(0u64);
            enc.put(0u32);
        }),
        "create",
    )
}

fn graph_create(guest: &mut RawGuest) -> u64 {
    create(guest, shim_macros::cuda_call_id!(cuGraphCreate))
}

/// `cuGraphAddEmptyNode(&node, graph, deps, n)` (hand-written wire: `u64 graph, u32 n,
/// n × u64, u8 has_edges, u32 type`): result and node.
fn add_empty_node(guest: &mut RawGuest, graph: u64, deps: &[u64]) -> (u32, u64) {
    let (rc, body) = call_with(
        guest,
        shim_macros::cuda_call_id!(cuGraphAddEmptyNode),
        |enc| {
            enc.put(graph);
            enc.put(deps.len() as u32);
            for d in deps {
                enc.put(*d);
            }
            enc.put_flag(false);
            enc.put(EMPTY_NODE);
        },
    );
    let node = if rc == 0 {
        Decoder::new(&body).get().expect("node")
    } else {
        0
    };
    (rc, node)
}

/// `cuGraphGetNodes(graph, nodes[capacity], &count)`: result and the nodes written.
fn graph_nodes(guest: &mut RawGuest, graph: u64) -> (u32, Vec<u64>) {
    let capacity = 16u64;
    let (rc, body) = call_with(guest, shim_macros::cuda_call_id!(cuGraphGetNodes), |enc| {
        enc.put(graph);
        enc.put(capacity);
        enc.put(1u8);
    });
    if rc != 0 {
        return (rc, Vec::new());
    }
    let mut dec = Decoder::new(&body);
    let count: u64 = dec.get().expect("count");
    let nodes: Vec<u64> = (0..capacity).map(|_| dec.get().expect("node")).collect();
    (rc, nodes[..count as usize].to_vec())
}

/// `cuGraphNodeGetType(node, &type)` (generated): result.
fn node_type(guest: &mut RawGuest, node: u64) -> u32 {
    let (rc, body) = call_with(
        guest,
        shim_macros::cuda_call_id!(cuGraphNodeGetType),
        |enc| {
            enc.put(node);
            enc.put(1u8);
            enc.put(0u32);
        },
    );
    if rc == 0 {
        assert_eq!(Decoder::new(&body).get::<u32>().expect("type"), EMPTY_NODE);
    }
    rc
}

/// `cuGraphInstantiateWithFlags(&exec, graph, 0)` (generated): result and executable graph.
fn instantiate(guest: &mut RawGuest, graph: u64) -> (u32, u64) {
    let (rc, body) = call_with(
        guest,
        shim_macros::cuda_call_id!(cuGraphInstantiateWithFlags),
        |enc| {
            enc.put(1u8);
            enc.put(0u64);
            enc.put(graph);
            enc.put(0u64);
        },
    );
    let exec = if rc == 0 {
        Decoder::new(&body).get().expect("exec")
    } else {
        0
    };
    (rc, exec)
}

/// `cuGraphExecUpdate_v2(exec, graph, &info)` (generated wire): result, info's result and
/// error node.
fn exec_update(guest: &mut RawGuest, exec: u64, graph: u64) -> (u32, u32, u64) {
    let (rc, body) = call_with(
        guest,
        shim_macros::cuda_call_id!(cuGraphExecUpdate_v2),
        |enc| {
            enc.put(exec);
            enc.put(graph);
            enc.put(1u8);
            enc.put([0u8; 24]);
        },
    );
    if rc == INVALID_HANDLE {
        return (rc, 0, 0);
    }
    let mut dec = Decoder::new(&body);
    let result: u32 = dec.get().expect("result");
    let _padding: u32 = dec.get().expect("padding");
    let error_node: u64 = dec.get().expect("error node");
    (rc, result, error_node)
}

/// `cuStreamBeginCapture_v2(stream, mode)`: the fake's capture graph gets `mode + 1` nodes.
fn begin_capture(guest: &mut RawGuest, stream: u64, mode: u32) -> u32 {
    call_with(
        guest,
        shim_macros::cuda_call_id!(cuStreamBeginCapture_v2),
        |enc| {
            enc.put(stream);
            enc.put(mode);
        },
    )
    .0
}

/// `cuStreamEndCapture(stream, &graph)`: the captured graph.
fn end_capture(guest: &mut RawGuest, stream: u64) -> u64 {
    handle_of(
        call_with(
            guest,
            shim_macros::cuda_call_id!(cuStreamEndCapture),
            |enc| {
                enc.put(stream);
                enc.put(1u8);
                enc.put(0u64);
            },
        ),
        "cuStreamEndCapture",
    )
}

/// `cuStreamUpdateCaptureDependencies_v2(stream, deps, NULL, n, 0)`: result.
fn update_capture_dependencies(guest: &mut RawGuest, stream: u64, deps: &[u64]) -> u32 {
    call_with(
        guest,
        shim_macros::cuda_call_id!(cuStreamUpdateCaptureDependencies_v2),
        |enc| {
            enc.put(stream);
            enc.put(deps.len() as u32);
            for d in deps {
                enc.put(*d);
            }
            enc.put_flag(false);
            enc.put(0u32);
        },
    )
    .0
}

#[test]
fn graphs_nodes_and_executable_graphs_the_client_was_not_given_never_reach_the_driver() {
    let host = start_host("hostile-graphs");
    let mut guest = RawGuest::connect(host.region());
    let launch = shim_macros::cuda_call_id!(cuGraphLaunch);
    let destroy_exec = shim_macros::cuda_call_id!(cuGraphExecDestroy);

    // Forged handles of every graph kind.
    assert_eq!(
        add_empty_node(&mut guest, 0xdead_0000, &[]).0,
        INVALID_HANDLE
    );
    assert_eq!(graph_nodes(&mut guest, 0xdead_0000).0, INVALID_HANDLE);
    assert_eq!(node_type(&mut guest, 0xdead_0010), INVALID_HANDLE);
    assert_eq!(instantiate(&mut guest, 0xdead_0000).0, INVALID_HANDLE);
    assert_eq!(call(&mut guest, launch, &[0xdead_e000, 0]), INVALID_HANDLE);

    // A real graph with one node; a forged node among its dependencies.
    let graph = graph_create(&mut guest);
    let (rc, first) = add_empty_node(&mut guest, graph, &[]);
    assert_eq!(rc, 0);
    assert_eq!(
        add_empty_node(&mut guest, graph, &[first, 0xdead_0010]).0,
        INVALID_HANDLE
    );
    let edges = call_with(
        &mut guest,
        shim_macros::cuda_call_id!(cuGraphAddDependencies),
        |enc| {
            enc.put(graph);
            enc.put(1u32);
            enc.put(0xdead_0010u64);
            enc.put(1u32);
            enc.put(first);
            enc.put_flag(false);
        },
    );
    assert_eq!(edges.0, INVALID_HANDLE, "a forged edge end");
    // A graph passed as a node, a node as a graph, a graph as an executable graph.
    assert_eq!(node_type(&mut guest, graph), INVALID_HANDLE);
    assert_eq!(graph_nodes(&mut guest, first).0, INVALID_HANDLE);
    assert_eq!(call(&mut guest, launch, &[graph, 0]), INVALID_HANDLE);

    // A destroyed node, a destroyed executable graph (posted launches report at the next
    // synchronous call), a destroyed graph's nodes.
    let (rc, second) = add_empty_node(&mut guest, graph, &[first]);
    assert_eq!(rc, 0);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphDestroyNode),
            &[second]
        ),
        0
    );
    assert_eq!(node_type(&mut guest, second), INVALID_HANDLE);
    let (rc, exec) = instantiate(&mut guest, graph);
    assert_eq!(rc, 0);
    assert_eq!(call(&mut guest, launch, &[exec, 0]), 0);
    assert_eq!(call(&mut guest, destroy_exec, &[exec]), 0);
    assert_eq!(call(&mut guest, launch, &[exec, 0]), INVALID_HANDLE);
    guest.post_raw(&request(launch, |enc| {
        enc.put(exec);
        enc.put(0u64);
    }));
    assert_eq!(
        node_type(&mut guest, first),
        INVALID_HANDLE,
        "the posted launch's refusal, reported by the next synchronous call"
    );
    assert_eq!(node_type(&mut guest, first), 0, "and only once");
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphDestroy),
            &[graph]
        ),
        0
    );
    assert_eq!(node_type(&mut guest, first), INVALID_HANDLE);
    assert_eq!(graph_nodes(&mut guest, graph).0, INVALID_HANDLE);

    // The stream in the instantiation parameters passes the gate too (the fake driver has no
    // cuGraphInstantiateWithParams: a stream the gate admits gets CUDA_ERROR_NOT_SUPPORTED).
    let graph = graph_create(&mut guest);
    for (stream, expected) in [(0xdead_6000u64, INVALID_HANDLE), (0, NOT_SUPPORTED)] {
        let rc = call_with(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphInstantiateWithParams),
            |enc| {
                enc.put(1u8);
                enc.put(0u64);
                enc.put(graph);
                enc.put(1u8);
                enc.put(0u64); // flags
                enc.put(stream);
                enc.put(0u64); // hErrNode_out
                enc.put(0u64); // result_out, padded
            },
        )
        .0;
        assert_eq!(rc, expected, "upload stream {stream:#x}");
    }

    let log = host.driver_log();
    assert!(
        !log.contains("dead"),
        "a forged handle reached the driver:\n{log}"
    );
    let count = |line: String| log.lines().filter(|l| *l == line).count();
    assert_eq!(count(format!("cuGraphNodeGetType {second:x}")), 0, "{log}");
    assert_eq!(count(format!("cuGraphNodeGetType {first:x}")), 1, "{log}");
    assert_eq!(
        count(format!("cuGraphLaunch {exec:x}")),
        1,
        "only the launch before the destruction reached the driver:\n{log}"
    );

    // And the client is still served.
    let (rc, node) = add_empty_node(&mut guest, graph, &[]);
    assert_eq!(rc, 0);
    assert_eq!(node_type(&mut guest, node), 0);
}

#[test]
fn a_captured_and_a_built_graph_are_instantiated_updated_launched_and_destroyed() {
    let host = start_host("graph-flow");
    let mut guest = RawGuest::connect(host.region());
    let stream = create(&mut guest, shim_macros::cuda_call_id!(cuStreamCreate));

    // Capture: the capture's dependencies, then the captured graph's nodes, all never seen
    // before by this client.
    assert_eq!(begin_capture(&mut guest, stream, 1), 0);
    let (rc, body) = call_with(
        &mut guest,
        shim_macros::cuda_call_id!(cuStreamGetCaptureInfo_v3),
        |enc| {
            enc.put(stream);
            enc.put(0b1_0111u8); // id, graph, dependencies, count
        },
    );
    assert_eq!(rc, 0);
    let mut dec = Decoder::new(&body);
    let (status, _id, capturing): (u32, u64, u64) =
        (dec.get().unwrap(), dec.get().unwrap(), dec.get().unwrap());
    let (n, has_deps): (u64, bool) = (dec.get().unwrap(), dec.get_flag("deps").unwrap());
    assert_eq!((status, n, has_deps), (1, 1, true));
    let dep: u64 = dec.get().unwrap();
    assert_eq!(
        node_type(&mut guest, dep),
        0,
        "a capture dependency is minted"
    );
    assert_eq!(update_capture_dependencies(&mut guest, stream, &[dep]), 0);
    assert_eq!(
        update_capture_dependencies(&mut guest, stream, &[dep, 0xdead_0010]),
        INVALID_HANDLE
    );
    let captured = end_capture(&mut guest, stream);
    assert_eq!(captured, capturing);
    let (rc, nodes) = graph_nodes(&mut guest, captured);
    assert_eq!((rc, nodes.len()), (0, 2));
    for node in &nodes {
        assert_eq!(node_type(&mut guest, *node), 0, "node {node:#x}");
    }
    let (rc, exec) = instantiate(&mut guest, captured);
    assert_eq!(rc, 0);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphLaunch),
            &[exec, stream]
        ),
        0
    );

    // The next capture has the same shape: the update succeeds. One of another shape fails and
    // names a node of the new graph the client never asked for: that node is the client's.
    assert_eq!(begin_capture(&mut guest, stream, 1), 0);
    let same = end_capture(&mut guest, stream);
    assert_eq!(exec_update(&mut guest, exec, same), (0, 0, 0));
    assert_eq!(begin_capture(&mut guest, stream, 2), 0);
    let other = end_capture(&mut guest, stream);
    let (rc, result, error_node) = exec_update(&mut guest, exec, other);
    assert_eq!((rc, result), (GRAPH_EXEC_UPDATE_FAILURE, 2));
    assert_ne!(error_node, 0);
    assert_eq!(
        node_type(&mut guest, error_node),
        0,
        "the error node is minted"
    );
    assert_eq!(exec_update(&mut guest, 0xdead_e000, same).0, INVALID_HANDLE);
    assert_eq!(exec_update(&mut guest, exec, 0xdead_0000).0, INVALID_HANDLE);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphLaunch),
            &[exec, stream]
        ),
        0
    );
    for graph in [captured, same, other] {
        assert_eq!(
            call(
                &mut guest,
                shim_macros::cuda_call_id!(cuGraphDestroy),
                &[graph]
            ),
            0
        );
    }
    assert_eq!(node_type(&mut guest, error_node), INVALID_HANDLE);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphLaunch),
            &[exec, stream]
        ),
        0,
        "an executable graph outlives its graph"
    );
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphExecDestroy),
            &[exec]
        ),
        0
    );

    // Built by hand, cloned: the clone's nodes are found, and outlive the original.
    let graph = graph_create(&mut guest);
    let (rc, a) = add_empty_node(&mut guest, graph, &[]);
    assert_eq!(rc, 0);
    let (rc, b) = add_empty_node(&mut guest, graph, &[a]);
    assert_eq!(rc, 0);
    let clone = handle_of(
        call_with(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphClone),
            |enc| {
                enc.put(1u8);
                enc.put(0u64);
                enc.put(graph);
            },
        ),
        "cuGraphClone",
    );
    let find = |guest: &mut RawGuest, node: u64, graph: u64| {
        call_with(
            guest,
            shim_macros::cuda_call_id!(cuGraphNodeFindInClone),
            |enc| {
                enc.put(1u8);
                enc.put(0u64);
                enc.put(node);
                enc.put(graph);
            },
        )
    };
    let b_clone = handle_of(find(&mut guest, b, clone), "cuGraphNodeFindInClone");
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphDestroy),
            &[graph]
        ),
        0
    );
    assert_eq!(node_type(&mut guest, b), INVALID_HANDLE);
    assert_eq!(
        node_type(&mut guest, b_clone),
        0,
        "the clone's node outlives the original"
    );
    assert_eq!(find(&mut guest, b, clone).0, INVALID_HANDLE);
    let (rc, exec) = instantiate(&mut guest, clone);
    assert_eq!(rc, 0);
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphLaunch),
            &[exec, 0]
        ),
        0
    );
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphExecDestroy),
            &[exec]
        ),
        0
    );
    assert_eq!(
        call(
            &mut guest,
            shim_macros::cuda_call_id!(cuGraphDestroy),
            &[clone]
        ),
        0
    );
    assert_eq!(node_type(&mut guest, b_clone), INVALID_HANDLE);
    host.assert_no_panic();
}

#[test]
fn memory_pools_and_link_states_pass_the_gate() {
    let host = start_host("hostile-pools");
    let mut guest = RawGuest::connect(host.region());
    let trim = shim_macros::cuda_call_id!(cuMemPoolTrimTo);
    let pool_destroy = shim_macros::cuda_call_id!(cuMemPoolDestroy);
    let default_pool = |guest: &mut RawGuest| {
        handle_of(
            call_with(
                guest,
                shim_macros::cuda_call_id!(cuDeviceGetDefaultMemPool),
                |enc| {
                    enc.put(1u8);
                    enc.put(0xdead_d000u64); // the guest's value never counts
                    enc.put(0i32);
                },
            ),
            "cuDeviceGetDefaultMemPool",
        )
    };

    assert_eq!(call(&mut guest, trim, &[0xdead_d000, 0]), INVALID_HANDLE);
    // A device's default pool, asked for twice: the same value, minted without harm.
    let pool = default_pool(&mut guest);
    assert_eq!(default_pool(&mut guest), pool);
    assert_ne!(pool, 0xdead_d000);
    assert_eq!(call(&mut guest, trim, &[pool, 0]), 0);
    assert_eq!(call(&mut guest, trim, &[0xdead_d000, 0]), INVALID_HANDLE);

    // A created pool, then destroyed.
    let props = [0u8; std::mem::size_of::<cuda_headers::CUmemPoolProps>()];
    let created = handle_of(
        call_with(
            &mut guest,
            shim_macros::cuda_call_id!(cuMemPoolCreate),
            |enc| enc.put(props),
        ),
        "cuMemPoolCreate",
    );
    assert_eq!(call(&mut guest, trim, &[created, 0]), 0);
    assert_eq!(call(&mut guest, pool_destroy, &[created]), 0);
    assert_eq!(call(&mut guest, trim, &[created, 0]), INVALID_HANDLE);
    assert_eq!(call(&mut guest, pool_destroy, &[created]), INVALID_HANDLE);

    // A link state, then destroyed; a pool is no link state.
    let link_destroy = shim_macros::cuda_call_id!(cuLinkDestroy);
    let state = handle_of(
        call_with(
            &mut guest,
            shim_macros::cuda_call_id!(cuLinkCreate_v2),
            |enc| enc.put(0u32),
        ),
        "cuLinkCreate_v2",
    );
    assert_eq!(call(&mut guest, link_destroy, &[pool]), INVALID_HANDLE);
    assert_eq!(
        call(&mut guest, link_destroy, &[0xdead_1c00]),
        INVALID_HANDLE
    );
    assert_eq!(call(&mut guest, link_destroy, &[state]), 0);
    assert_eq!(call(&mut guest, link_destroy, &[state]), INVALID_HANDLE);

    let log = host.driver_log();
    assert!(
        !log.contains("dead"),
        "a forged handle reached the driver:\n{log}"
    );
    assert_eq!(
        log.matches(&format!("cuMemPoolDestroy {created:x}"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches(&format!("cuLinkDestroy {state:x}")).count(),
        1,
        "{log}"
    );
    // And the client is still served.
    assert_eq!(call(&mut guest, trim, &[pool, 0]), 0);
    host.assert_no_panic();
}
