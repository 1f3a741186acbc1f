// Workgroup reduction through subgroup shuffles (adapters with SUBGROUP): a shuffle tree in
// each subgroup, one workgroup-memory write per subgroup and one barrier, then a shuffle
// tree over the subgroups' records in the first subgroup. Every merge is the kernel's own
// `merge`, so records that are not plain sums (argmaxes, top lists, first bad columns)
// reduce the same way.
// Uses, from the kernel file: `Rec`, `merge(a: Rec, b: Rec) -> Rec` and
// `shuffle_down(r: Rec, d: u32) -> Rec` (subgroupShuffleDown of every member).

struct WgIds {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
    @builtin(subgroup_size) sg_size: u32,
    @builtin(subgroup_invocation_id) sg_lane: u32,
    @builtin(subgroup_id) sg_id: u32,
    @builtin(num_subgroups) n_sg: u32,
}

// wgpu guarantees subgroups of at least 4 invocations (MINIMUM_SUBGROUP_MIN_SIZE).
var<workgroup> part: array<Rec, MAX_SUBGROUPS>;
var<workgroup> part_max: array<vec2<real>, MAX_SUBGROUPS>;

fn is_first(ids: WgIds) -> bool {
    return ids.sg_id == 0u && ids.sg_lane == 0u;
}

// Lane 0 gets the merge of lanes [0, lanes) of its subgroup (subgroup sizes are powers of 2;
// lanes at or past `lanes` are shuffled but never merged).
fn subgroup_merge(acc: Rec, lanes: u32, ids: WgIds) -> Rec {
    var r = acc;
    for (var d = ids.sg_size / 2u; d > 0u; d >>= 1u) {
        let o = shuffle_down(r, d);
        if (ids.sg_lane + d < lanes) {
            r = merge(r, o);
        }
    }
    return r;
}

// Every thread's record merged, valid in the first thread. Called in uniform control flow.
fn reduce_wg(acc: Rec, ids: WgIds) -> Rec {
    // Active lanes (all of them whenever WG is a multiple of the subgroup size, as here).
    let lanes = subgroupAdd(1u);
    let r = subgroup_merge(acc, lanes, ids);
    if (ids.sg_lane == 0u) {
        part[ids.sg_id] = r;
    }
    workgroupBarrier();
    var total = r;
    if (ids.sg_id == 0u) {
        // More subgroups than lanes (small subgroups): each lane first merges a strided set.
        var t = part[min(ids.sg_lane, ids.n_sg - 1u)];
        for (var k = ids.sg_lane + ids.sg_size; k < ids.n_sg; k += ids.sg_size) {
            t = merge(t, part[k]);
        }
        total = subgroup_merge(t, min(ids.n_sg, ids.sg_size), ids);
    }
    return total;
}

// The workgroup's componentwise maximum of `v`, in every thread. Called in uniform control
// flow.
fn reduce_max_wg(v: vec2<real>, ids: WgIds) -> vec2<real> {
    let lanes = subgroupAdd(1u);
    var r = v;
    for (var d = ids.sg_size / 2u; d > 0u; d >>= 1u) {
        let o = vec2<real>(subgroupShuffleDown(r.x, d), subgroupShuffleDown(r.y, d));
        if (ids.sg_lane + d < lanes) {
            r = max(r, o);
        }
    }
    if (ids.sg_lane == 0u) {
        part_max[ids.sg_id] = r;
    }
    workgroupBarrier();
    var m = part_max[0];
    for (var k = 1u; k < ids.n_sg; k++) {
        m = max(m, part_max[k]);
    }
    return m;
}
