# f64 probability rows: kldiv against numpy and scipy on the same float64 arrays (BENCHMARKS.md, session 40).
# Needs the Python package (pip install ./python) and scipy.
import numpy as np, kldiv, time, scipy.special as sp
from scipy.spatial.distance import jensenshannon
rng=np.random.default_rng(0)
def best(f,n=5):
    f(); ts=[]
    for i in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return min(ts)
for name,shape in [("W1/4 1024x32000",(1024,32000)),("W2/4 250000x16",(250000,16))]:
    p=rng.dirichlet(np.ones(shape[1]),size=shape[0]); p+=1e-6; p/=p.sum(1,keepdims=True)
    q=p*np.exp(0.1*rng.standard_normal(shape)); q/=q.sum(1,keepdims=True)
    p32,q32=p.astype(np.float32),q.astype(np.float32)
    m=0.5*(p+q)
    ref=(p*np.log(p/q)).sum(1)
    rows=[("kldiv kl f64",lambda: kldiv.kl(p,q,device="cpu")),
          ("kldiv kl f32",lambda: kldiv.kl(p32,q32,device="cpu")),
          ("numpy (p*log(p/q)).sum f64",lambda: (p*np.log(p/q)).sum(1)),
          ("scipy rel_entr.sum f64",lambda: sp.rel_entr(p,q).sum(1)),
          ("kldiv js f64",lambda: kldiv.kl(p,q,divergence="js",device="cpu")),
          ("numpy js f64",lambda: 0.5*(sp.rel_entr(p,0.5*(p+q)).sum(1)+sp.rel_entr(q,0.5*(p+q)).sum(1)))]
    for lab,f in rows:
        t=best(f); print(f"{name} | {lab} | {p.size/t/1e9:.3f} Gelem/s")
    g=kldiv.kl(p,q,device="cpu"); print(name,"max rel diff kldiv vs numpy f64", np.max(np.abs(g-ref)/ref))
