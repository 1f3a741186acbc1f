// Every member of LogitRec from lane + d (reduce_subgroup.wgsl; a test checks no member is missed).
fn shuffle_down(r: LogitRec, d: u32) -> LogitRec {
    return LogitRec(subgroupShuffleDown(r.ma, d), subgroupShuffleDown(r.mb, d),
                    subgroupShuffleDown(r.sa, d), subgroupShuffleDown(r.sb, d),
                    subgroupShuffleDown(r.ea, d), subgroupShuffleDown(r.eb, d),
                    subgroupShuffleDown(r.xa, d), subgroupShuffleDown(r.xb, d),
                    subgroupShuffleDown(r.ax_a, d), subgroupShuffleDown(r.ax_b, d),
                    subgroupShuffleDown(r.psi_a, d), subgroupShuffleDown(r.psi_b, d),
                    subgroupShuffleDown(r.xerr_a, d), subgroupShuffleDown(r.xerr_b, d),
                    subgroupShuffleDown(r.c_hi, d), subgroupShuffleDown(r.c_lo, d),
                    subgroupShuffleDown(r.na, d), subgroupShuffleDown(r.nb, d),
                    subgroupShuffleDown(r.q_zero, d), subgroupShuffleDown(r.p_zero, d),
                    subgroupShuffleDown(r.bad, d), subgroupShuffleDown(r.psi_bad, d),
                    subgroupShuffleDown(r.top_a, d), subgroupShuffleDown(r.top_b, d));
}
