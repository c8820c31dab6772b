"""A cache-prefetch hint for the compiled kernels of the simulation.

The topo-clustering's growth and splitting walk the neighbour lists of the cells in their queues
(2.8 MB of ``int32`` for the 70 656 cells of the jet calorimeter, larger than a core's L2 cache),
and the sparse readout looks up per-cell noise terms at random candidate cells: each access a
likely cache miss whose address is known several steps ahead. :func:`prefetch` asks the CPU to
start loading it then (LLVM's ``llvm.prefetch``: a hint, which never faults and changes no value,
so the kernels' results are the same bit for bit).
"""

from __future__ import annotations

from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, i):
    """Hint the CPU to fetch the cache line of ``arr[i]`` (read, kept in all cache levels) — in
    compiled code only; ``arr`` a C-contiguous 1-d array, ``i`` an integer (no bounds check needed:
    a prefetch of any address is harmless)."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and arr.layout == "C" and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        idx = context.cast(builder, args[1], sig.args[1], types.intp)
        ptr = builder.bitcast(builder.gep(ary.data, [idx]), ir.IntType(8).as_pointer())  # one declaration for all
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, high temporal locality, data cache
        return context.get_dummy_value()

    return types.none(arr, i), codegen
