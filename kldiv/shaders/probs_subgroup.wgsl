// Every member of ProbRec from lane + d (reduce_subgroup.wgsl; a test checks no member is missed).
fn shuffle_down(r: ProbRec, d: u32) -> ProbRec {
    return ProbRec(subgroupShuffleDown(r.main, d), subgroupShuffleDown(r.main2, d),
                   subgroupShuffleDown(r.sp, d), subgroupShuffleDown(r.sq, d),
                   subgroupShuffleDown(r.diff, d), subgroupShuffleDown(r.q_zero, d),
                   subgroupShuffleDown(r.p_zero, d), subgroupShuffleDown(r.bad, d), 0u);
}
