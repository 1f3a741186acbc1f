// Every member of JsRec from lane + d (reduce_subgroup.wgsl; a test checks no member is missed).
fn shuffle_down(r: JsRec, d: u32) -> JsRec {
    return JsRec(subgroupShuffleDown(r.h, d), subgroupShuffleDown(r.err, d),
                 subgroupShuffleDown(r.amu, d), subgroupShuffleDown(r.sp, d),
                 subgroupShuffleDown(r.sq, d), subgroupShuffleDown(r.bad, d), 0u, 0u, 0u);
}
