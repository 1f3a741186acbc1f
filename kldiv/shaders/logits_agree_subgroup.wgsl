// Every member of Cand from lane + d (reduce_subgroup.wgsl; a test checks no member is missed).
fn shuffle_down(r: Cand, d: u32) -> Cand {
    return Cand(subgroupShuffleDown(r.va, d), subgroupShuffleDown(r.vb, d),
                subgroupShuffleDown(r.sm, d), subgroupShuffleDown(r.ca, d),
                subgroupShuffleDown(r.cb, d), subgroupShuffleDown(r.bad, d));
}
