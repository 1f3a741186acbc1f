// Workgroup reduction through a tree in workgroup memory, for adapters without subgroups.
// Uses, from the kernel file: `Rec` and `merge(a: Rec, b: Rec) -> Rec`.

struct WgIds {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

// A quarter of the workgroup's records at a time: f64 logits records are 160 bytes, and a
// tree over WG of them would not fit the 16 KiB of workgroup memory every adapter has.
var<workgroup> part: array<Rec, TREE>;
var<workgroup> part_max: array<vec2<real>, TREE>;

// The thread that holds the workgroup's result after `reduce_wg`.
fn is_first(ids: WgIds) -> bool {
    return ids.lid == 0u;
}

// Every thread's record merged, valid in the first thread. Called in uniform control flow.
// The upper quarters hand their records to the first quarter one quarter at a time, then a
// tree over TREE entries.
fn reduce_wg(acc: Rec, ids: WgIds) -> Rec {
    let lid = ids.lid;
    var r = acc;
    for (var k = WG / TREE - 1u; k > 0u; k--) {
        if (lid / TREE == k) {
            part[lid % TREE] = r;
        }
        workgroupBarrier();
        if (lid < TREE) {
            r = merge(r, part[lid]);
        }
        workgroupBarrier();
    }
    if (lid < TREE) {
        part[lid] = r;
    }
    workgroupBarrier();
    for (var s = TREE / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part[lid] = merge(part[lid], part[lid + s]);
        }
        workgroupBarrier();
    }
    return part[0];
}

// The workgroup's componentwise maximum of `v`, in every thread, folded as `reduce_wg`
// folds. Called in uniform control flow.
fn reduce_max_wg(v: vec2<real>, ids: WgIds) -> vec2<real> {
    let lid = ids.lid;
    var r = v;
    for (var k = WG / TREE - 1u; k > 0u; k--) {
        if (lid / TREE == k) {
            part_max[lid % TREE] = r;
        }
        workgroupBarrier();
        if (lid < TREE) {
            r = max(r, part_max[lid]);
        }
        workgroupBarrier();
    }
    if (lid < TREE) {
        part_max[lid] = r;
    }
    workgroupBarrier();
    for (var s = TREE / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part_max[lid] = max(part_max[lid], part_max[lid + s]);
        }
        workgroupBarrier();
    }
    return part_max[0];
}
