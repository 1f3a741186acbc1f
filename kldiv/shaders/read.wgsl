// A plain read of two buffers: the adapter's memory-read limit, measured the way the kernels
// read (two streams, coalesced 16-byte loads, a grid-stride loop), so that `kldiv bench`
// can put each kernel's GB/s against it. The XOR of everything read is written only if it
// equals a value it cannot be known to avoid, so no compiler can drop the loads.

@group(0) @binding(0) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> sink: array<u32>;

@compute @workgroup_size(256)
fn read_both(@builtin(global_invocation_id) gid: vec3<u32>,
        @builtin(num_workgroups) groups: vec3<u32>) {
    let stride = groups.x * 256u;
    let n = arrayLength(&a);
    var acc = vec4<u32>(0u);
    for (var i = gid.x; i < n; i += stride) {
        acc ^= a[i] ^ b[i];
    }
    let x = acc.x ^ acc.y ^ acc.z ^ acc.w;
    if (x == sink[0] + 0x9e3779b9u) {
        sink[1] = x;
    }
}
