// Workgroup reduction through a tree in workgroup memory, for adapters without subgroups.
// Uses, from the kernel file: `Rec` and `merge(a: Rec, b: Rec) -> Rec`.

struct WgIds {
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
}

var<workgroup> part: array<Rec, HALF_WG>;

// The thread that holds the workgroup's result after `reduce_wg`.
fn is_first(ids: WgIds) -> bool {
    return ids.lid == 0u;
}

// Every thread's record merged, valid in the first thread. Called in uniform control flow.
// The upper half hands its records to the lower half, then a tree over HALF_WG entries (half
// the workgroup memory of a tree over WG: f64 records are large).
fn reduce_wg(acc: Rec, ids: WgIds) -> Rec {
    let lid = ids.lid;
    if (lid >= HALF_WG) {
        part[lid - HALF_WG] = acc;
    }
    workgroupBarrier();
    if (lid < HALF_WG) {
        part[lid] = merge(acc, part[lid]);
    }
    workgroupBarrier();
    for (var s = HALF_WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            part[lid] = merge(part[lid], part[lid + s]);
        }
        workgroupBarrier();
    }
    return part[0];
}
