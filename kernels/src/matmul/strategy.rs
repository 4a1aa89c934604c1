//! Matmul through cubek with a named strategy. burn-cubecl 0.21 without autotune always runs
//! cubek's default (`SimpleCyclicCmma`); with autotune it also tries the TMA kernels, whose
//! launch failure on the H100 kills cubecl's device thread. This picks among the others by
//! name, so `nanovllm kernels matmul` can measure them on the model's shapes.
use burn_cubecl::{kernel::matmul::init_matmul_output, tensor::CubeTensor, CubeRuntime};
use cubek::matmul::{
    components::tile::TileMatmulKind,
    definition::{MatmulElems, MatmulGlobalElems, MatmulSetupError},
    launch::{launch_ref, Strategy},
    routines::{
        double_buffering::DoubleBufferingArgs, double_unit::DoubleUnitSelectionArgs,
        ordered_double_buffering::OrderedSelectionArgs, simple::SimpleArgs,
        simple_unit::SimpleUnitSelectionArgs, BlueprintStrategy, TileSizeSelection,
    },
};
use cubek::std::InputBinding;

/// The cubek strategy `project` runs for `rows` rows below cuBLAS's threshold (or without
/// cuBLAS) on a weight laid out as a transposed view (every projection's layout), chosen by
/// `nanovllm kernels matmul` on an H100 in bf16 over qwen3-0.6b's five projections (docs/perf-log.md,
/// "Matmul"): burn's default (`SimpleCyclicCmma`) took 2.0x the time at 16 rows, 1.9x at 256
/// and 2.4x at 4,096.
pub fn project_strategy(rows: usize) -> Strategy {
    use BlueprintStrategy::Inferred;
    match rows {
        // A vector-matrix kernel with a plane per output block: 2.1x our own on the LM head.
        1 => Strategy::GemvPlaneParallel(Inferred(Default::default())),
        // Specialized loaders (warps that only load, warps that only multiply) with Hopper's
        // `mma`: the best over the five shapes at 16 rows. The bench's decode steps of 9 to 16
        // sequences took 8.2 ms with it, those of 2 to 8 took 10.2 ms with the engine's former
        // small-M kernel (weights re-read per row), which it replaces.
        m if m <= 64 => Strategy::SpecializedCyclicMma(Inferred(().into())),
        // Double buffering in k with rows ordered per plane: the best at 256 rows.
        m if m <= 1024 => Strategy::OrderedDoubleMma(Inferred(OrderedSelectionArgs {
            partition_k: Some(2),
            row_count: Some(8),
            rows_per_plane: Some(2),
            tile_matmul: TileMatmulKind::Mma,
        })),
        // Plain double buffering: the best at 4,096 rows (185 to 195 TFLOP/s).
        _ => Strategy::DoubleCyclicMma(Inferred(DoubleBufferingArgs {
            specialized: false,
            tile_matmul: TileMatmulKind::Mma,
        })),
    }
}

/// Whether [`project_strategy`]'s kernels may take a product of depth `k`. They were chosen on
/// model shapes (k of 1,024 and more); on the H200 in bf16 they returned wrong values for the
/// tiny MoE parity shapes (k of 32 to 96: products per expert, factored bases), where burn's
/// default kernel is right, so shallow products keep the default.
pub fn takes_depth(k: usize) -> bool {
    k >= 256 && k.is_multiple_of(64)
}

/// The tiled strategies worth timing: burn's autotune set without TMA, one variant of each
/// family per tile instruction (CMMA, the portable one, and MMA, Hopper's `mma.sync`).
pub fn tiled_strategies() -> Vec<Strategy> {
    use BlueprintStrategy::Inferred;
    let mut all = vec![Strategy::Auto];
    for tile_matmul in [TileMatmulKind::Cmma, TileMatmulKind::Mma] {
        let cmma = matches!(tile_matmul, TileMatmulKind::Cmma);
        for multi_rows in [false, true] {
            let args = SimpleArgs {
                multi_rows,
                tile_matmul,
            };
            all.push(match cmma {
                true => Strategy::SimpleCyclicCmma(Inferred(args)),
                false => Strategy::SimpleCyclicMma(Inferred(args)),
            });
        }
        let ordered = OrderedSelectionArgs {
            partition_k: Some(2),
            row_count: Some(8),
            rows_per_plane: Some(2),
            tile_matmul,
        };
        let double = DoubleBufferingArgs {
            specialized: false,
            tile_matmul,
        };
        all.extend(match cmma {
            true => [
                Strategy::OrderedDoubleCmma(Inferred(ordered)),
                Strategy::DoubleCyclicCmma(Inferred(double)),
                Strategy::SpecializedCyclicCmma(Inferred(().into())),
            ],
            false => [
                Strategy::OrderedDoubleMma(Inferred(ordered)),
                Strategy::DoubleCyclicMma(Inferred(double)),
                Strategy::SpecializedCyclicMma(Inferred(().into())),
            ],
        });
    }
    all
}

/// The strategies for a few rows: one thread per output tile, and the vector-matrix kernels.
pub fn few_rows_strategies() -> Vec<Strategy> {
    use BlueprintStrategy::Inferred;
    let unit = |tile_size| SimpleUnitSelectionArgs { tile_size };
    vec![
        Strategy::SimpleUnit(Inferred(unit(TileSizeSelection::MaxTileSize))),
        Strategy::SimpleUnit(Inferred(unit(TileSizeSelection::MinTileSize))),
        Strategy::DoubleUnit(Inferred(DoubleUnitSelectionArgs {
            tile_size: TileSizeSelection::MaxTileSize,
        })),
        Strategy::SimpleVecMat(Inferred(().into())),
        Strategy::DoubleVecMat(Inferred(().into())),
        Strategy::GemvPlaneParallel(Inferred(Default::default())),
        Strategy::GemvUnitPerpendicular(Inferred(Default::default())),
    ]
}

/// `lhs @ rhs` with `strategy`, into a new tensor of `lhs`'s dtype. An error when the strategy
/// does not take these shapes or layouts.
pub fn matmul_with<R: CubeRuntime>(
    strategy: &Strategy,
    lhs: CubeTensor<R>,
    rhs: CubeTensor<R>,
) -> Result<CubeTensor<R>, MatmulSetupError> {
    let (dtype, rhs_dtype) = (lhs.dtype, rhs.dtype);
    let out = init_matmul_output(&lhs, &rhs, dtype);
    let mut dtypes = MatmulElems::from_globals(&MatmulGlobalElems {
        lhs: dtype.into(),
        rhs: rhs_dtype.into(),
        out: dtype.into(),
    });
    let client = out.client.clone();
    launch_ref(
        strategy,
        &client,
        InputBinding::new(lhs.binding(), dtype.into()),
        InputBinding::new(rhs.binding(), rhs_dtype.into()),
        out.clone().binding(),
        &mut dtypes,
    )?;
    Ok(out)
}
