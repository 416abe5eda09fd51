#!/usr/bin/env bash
# Builds llama.cpp with CUDA for the speed benchmark (issue 10, bench/llm/README.md) here, without a
# GPU, and packs it as .gpu-artifacts/llama.tar.xz for scripts/gpu-bench.sh, which unpacks it into
# .gpu-artifacts/llama/ on the GPU machine:
#
#   llama/llama-bench, llama/llama-completion   RUNPATH $ORIGIN
#   llama/lib*.so*                              libllama, libllama-common, libllama-{bench,completion}-impl,
#                                               libggml, libggml-base, libggml-cpu, libggml-cuda (sm_90)
#   llama/gguf-py/                              llama.cpp's gguf-py (bench/llm/make_gguf.py --gguf-py)
#   llama/pydeps/yaml/                          pure-Python PyYAML, which gguf-py imports
#   llama/LICENSE, llama/pydeps/PyYAML-LICENSE
#
# The CUDA runtime and cuBLAS (libcudart.so.13, libcublas.so.13, libcublasLt.so.13) are NOT bundled:
# gpu-bench.sh puts the GPU machine's CUDA 13 (/usr/local/cuda/lib64, then pip's nvidia/cu13/lib) on
# LD_LIBRARY_PATH, and libcuda.so.1 is the driver's (natively) or vgpu's shim (under `vgpuctl run`).
#
# - Source: ../shared/clients/llama.cpp-src.tgz (llama-cpp-python 0.3.36's vendor/llama.cpp,
#   trimmed; see its README), or $LLAMA_SRC_TGZ.
# - Toolkit: CUDA 13.0 assembled from PyPI wheels (nvcc, nvvm, crt, runtime, cccl, cublas), fetched
#   once with `pip download --no-deps` into ~/.cache/vgpu/llama-build/wheels/ and unpacked into a
#   toolkit root with the usual layout (bin/, nvvm/, targets/x86_64-linux/{include,lib}, with
#   include and lib64 links to the latter two), plus a generated link-time stub libcuda.so (soname libcuda.so.1) in
#   lib64/stubs/. cuBLAS is linked against the oldest 13.0 release (13.0.0.19), so any CUDA 13.x
#   cuBLAS on the GPU machine satisfies it.
# - Build: sm_90 only (`-DCMAKE_CUDA_ARCHITECTURES=90-real`, H100/H200), GGML_NATIVE=OFF (AVX2 CPU
#   code, not this machine's), no OpenMP, no NCCL; targets llama-bench and llama-completion.
#   Build tree: ~/.cache/vgpu/llama-build/build (re-runs are incremental).
# - Time: ~30-35 min on 2 cores at nice 19 the first time (the 289 build steps, mostly CUDA
#   kernels), under a minute afterwards; the wheels are ~520 MB to download once. The tarball is
#   ~21 MB, 51 MB unpacked (the limit for all of .gpu-artifacts when carried: 64 MiB).
#
# Everything runs at nice 19. Usage: scripts/build-llama.sh   (from anywhere; env: JOBS=2,
# VGPU_LLAMA_CACHE=~/.cache/vgpu/llama-build, LLAMA_SRC_TGZ=...)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${VGPU_LLAMA_CACHE:-${HOME}/.cache/vgpu/llama-build}"
SRC_TGZ="${LLAMA_SRC_TGZ:-${ROOT}/../shared/clients/llama.cpp-src.tgz}"
JOBS="${JOBS:-2}"
WHEELS_DIR="${CACHE}/wheels"
CUDA_ROOT="${CACHE}/cuda-13.0"
SRC_PARENT="${CACHE}/src"
SRC="${SRC_PARENT}/llama.cpp"
BUILD="${CACHE}/build"
STAGE_PARENT="${CACHE}/stage"
STAGE="${STAGE_PARENT}/llama"
ART="${ROOT}/.gpu-artifacts"
TARBALL="${ART}/llama.tar.xz"
# CUDA 13.0 pieces. cuBLAS: the 13.0 GA release, the oldest any CUDA 13.0 install has.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88
    nvidia-nvvm==13.0.88
    nvidia-cuda-crt==13.0.88
    nvidia-cuda-runtime==13.0.96
    nvidia-cuda-cccl==13.0.85
    nvidia-cublas==13.0.0.19
)
PYYAML_VERSION=6.0.2

log() { echo "build-llama: $*" >&2; }
die() { log "error: $*"; exit 1; }

renice -n 19 -p $$ >/dev/null 2>&1 || true

check_tools() {
    local t
    for t in gcc g++ unzip xz tar strip readelf python3; do
        command -v "${t}" >/dev/null || die "needs ${t}"
    done
    if ! command -v cmake >/dev/null || ! command -v ninja >/dev/null; then
        log "installing cmake and ninja with pip"
        python3 -m pip install --quiet cmake ninja
    fi
    cmake --version | head -n1 >&2
    [[ -f "${SRC_TGZ}" ]] || die "no llama.cpp source at ${SRC_TGZ}"
}

# The wheel file of a "name==version" in WHEELS_DIR (pip's file names use '_' for '-').
wheel_file() {
    local name="${1%%==*}" version="${1##*==}"
    compgen -G "${WHEELS_DIR}/${name//-/_}-${version}-*.whl" | head -n1 || true
}

fetch_wheels() {
    mkdir -p "${WHEELS_DIR}"
    local missing=() w
    for w in "${WHEELS[@]}"; do
        [[ -n "$(wheel_file "${w}")" ]] || missing+=("${w}")
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "fetching ${missing[*]} from PyPI into ${WHEELS_DIR}"
        python3 -m pip download --quiet --no-deps --only-binary=:all: -d "${WHEELS_DIR}" "${missing[@]}"
    fi
    for w in "${WHEELS[@]}"; do
        [[ -n "$(wheel_file "${w}")" ]] || die "no wheel for ${w} in ${WHEELS_DIR}"
    done
    if ! compgen -G "${WHEELS_DIR}/pyyaml-${PYYAML_VERSION}.tar.gz" >/dev/null; then
        log "fetching the PyYAML ${PYYAML_VERSION} source distribution (pure-Python lib/yaml)"
        python3 -m pip download --quiet --no-deps --no-binary=:all: -d "${WHEELS_DIR}" \
            "PyYAML==${PYYAML_VERSION}"
    fi
}

# Generates a link-time libcuda.so (soname libcuda.so.1) defining every driver entry point that
# cuda.h declares, under the names its macros map them to (cuCtxCreate -> cuCtxCreate_v4, ...).
make_libcuda_stub() {
    local dir="$1" inc="$2"
    mkdir -p "${dir}"
    gcc -E -P -x c "${inc}/cuda.h" -I"${inc}" \
        | grep -oE '\bCUresult[[:space:]]+cu[A-Za-z0-9_]+[[:space:]]*\(' \
        | sed -E 's/^CUresult[[:space:]]+//; s/[[:space:]]*\($//' | sort -u \
        | awk 'BEGIN { print "/* Generated by scripts/build-llama.sh: link-time stub only. */" }
               { printf "int %s(void);\nint %s(void) { return 999; }\n", $1, $1 }' \
        > "${dir}/libcuda_stub.c"
    [[ "$(grep -c '^int cu' "${dir}/libcuda_stub.c")" -gt 200 ]] || die "few symbols in the libcuda stub"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "${dir}/libcuda.so" "${dir}/libcuda_stub.c"
    ln -sfn libcuda.so "${dir}/libcuda.so.1"
}

# CUDA_ROOT: bin/ (nvcc, ptxas, fatbinary, nvlink, cudafe++), nvvm/, targets/x86_64-linux/{include,lib},
# include and lib64 links to them, lib64/stubs/libcuda.so. Rebuilt when the wheel list changes.
assemble_cuda() {
    local stamp="${CUDA_ROOT}/.wheels" want
    want="$(printf '%s\n' "${WHEELS[@]}")"
    if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${want}" && -x "${CUDA_ROOT}/bin/nvcc" ]]; then
        log "CUDA toolkit root: ${CUDA_ROOT} (cached)"
        return
    fi
    log "assembling a CUDA 13.0 toolkit root at ${CUDA_ROOT}"
    local tmp="${CUDA_ROOT}.partial" w
    rm -rf "${tmp}" "${CUDA_ROOT}"
    mkdir -p "${tmp}/x"
    for w in "${WHEELS[@]}"; do
        unzip -q -o "$(wheel_file "${w}")" 'nvidia/cu13/*' -d "${tmp}/x"
    done
    local cu="${tmp}/x/nvidia/cu13" tgt="${tmp}/targets/x86_64-linux"
    mkdir -p "${tgt}"
    mv "${cu}/bin" "${cu}/nvvm" "${tmp}/"
    mv "${cu}/include" "${cu}/lib" "${tgt}/"
    rm -rf "${tmp}/x"  # what is left: cccl's .metadata/
    chmod +x "${tmp}"/bin/* "${tmp}"/nvvm/bin/* 2>/dev/null || true
    ln -s targets/x86_64-linux/include "${tmp}/include"
    ln -s targets/x86_64-linux/lib "${tmp}/lib64"
    # Development links the wheels lack (they ship only the sonames).
    local so
    for so in "${tgt}"/lib/*.so.*; do
        ln -sfn "$(basename "${so}")" "${so%%.so.*}.so"
    done
    make_libcuda_stub "${tgt}/lib/stubs" "${tgt}/include"
    "${tmp}/bin/nvcc" --version | tail -n2 >&2
    printf '%s\n' "${WHEELS[@]}" > "${tmp}/.wheels"
    mv "${tmp}" "${CUDA_ROOT}"
}

# Unpacks the source once per tarball (same mtimes across runs keep the build incremental).
unpack_source() {
    local sum
    sum="$(sha256sum "${SRC_TGZ}" | cut -d' ' -f1)"
    if [[ -f "${SRC_PARENT}/.sha256" && "$(cat "${SRC_PARENT}/.sha256")" == "${sum}" && -d "${SRC}" ]]; then
        log "source: ${SRC} (cached)"
        return
    fi
    log "unpacking ${SRC_TGZ} into ${SRC_PARENT}"
    rm -rf "${SRC_PARENT}" "${BUILD}"
    mkdir -p "${SRC_PARENT}"
    tar xzf "${SRC_TGZ}" -C "${SRC_PARENT}"
    [[ -f "${SRC}/CMakeLists.txt" ]] || die "no llama.cpp/CMakeLists.txt in ${SRC_TGZ}"
    echo "${sum}" > "${SRC_PARENT}/.sha256"
}

build() {
    local lib="${CUDA_ROOT}/lib64"
    # -rpath-link: ld resolves libcublasLt.so.13 (needed by libcublas) and libcuda.so.1 (the stub)
    # while checking the shared libraries' undefined symbols; nothing of it lands in the binaries.
    local ldflags="-Wl,-rpath-link,${lib}:${lib}/stubs"
    log "configuring ${BUILD}"
    cmake -S "${SRC}" -B "${BUILD}" -G Ninja \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_CUDA_COMPILER="${CUDA_ROOT}/bin/nvcc" \
        -DCUDAToolkit_ROOT="${CUDA_ROOT}" \
        -DCMAKE_CUDA_ARCHITECTURES=90-real \
        -DGGML_CUDA=ON -DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CUDA_NCCL=OFF \
        -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
        -DBUILD_SHARED_LIBS=ON \
        -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON -DCMAKE_INSTALL_RPATH='$ORIGIN' \
        -DCMAKE_EXE_LINKER_FLAGS="${ldflags}" -DCMAKE_SHARED_LINKER_FLAGS="${ldflags}" \
        > "${CACHE}/configure.log" 2>&1 || { tail -n 40 "${CACHE}/configure.log" >&2; die "cmake failed"; }
    grep -E 'CUDA Toolkit found|CUDA host compiler|Using CUDA architectures|The CUDA compiler' \
        "${CACHE}/configure.log" >&2 || true
    log "building llama-bench and llama-completion with -j${JOBS} (log: ${CACHE}/build.log)"
    local t0=${SECONDS}
    cmake --build "${BUILD}" --target llama-bench llama-completion -j "${JOBS}" \
        > "${CACHE}/build.log" 2>&1 || { tail -n 40 "${CACHE}/build.log" >&2; die "build failed"; }
    log "built in $(( (SECONDS - t0) / 60 )) min $(( (SECONDS - t0) % 60 )) s"
}

# Copies the binaries and, following NEEDED from them, every library that the build made.
stage() {
    local bin="${BUILD}/bin"
    rm -rf "${STAGE_PARENT}"
    mkdir -p "${STAGE}/pydeps"
    local queue=(llama-bench llama-completion) seen=" " f dep
    while [[ ${#queue[@]} -gt 0 ]]; do
        f="${queue[0]}"
        queue=("${queue[@]:1}")
        if [[ "${seen}" == *" ${f} "* ]]; then
            continue
        fi
        seen+="${f} "
        cp -L "${bin}/${f}" "${STAGE}/${f}"
        strip --strip-unneeded "${STAGE}/${f}"
        for dep in $(readelf -d "${bin}/${f}" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            if [[ -e "${bin}/${dep}" ]]; then
                queue+=("${dep}")
            fi
        done
    done
    cp "${SRC}/LICENSE" "${STAGE}/LICENSE"
    cp -r "${SRC}/gguf-py" "${STAGE}/gguf-py"
    rm -rf "${STAGE}/gguf-py/tests"
    find "${STAGE}/gguf-py" -name __pycache__ -prune -exec rm -rf {} +
    local y="${STAGE_PARENT}/pyyaml"
    mkdir -p "${y}"
    tar xzf "${WHEELS_DIR}/pyyaml-${PYYAML_VERSION}.tar.gz" -C "${y}"
    cp -r "${y}/pyyaml-${PYYAML_VERSION}/lib/yaml" "${STAGE}/pydeps/yaml"
    cp "${y}/pyyaml-${PYYAML_VERSION}/LICENSE" "${STAGE}/pydeps/PyYAML-LICENSE"
    rm -rf "${y}"
    # The staged gguf-py must import with only numpy beside it.
    python3 -c "import sys; sys.path[:0] = ['${STAGE}/gguf-py', '${STAGE}/pydeps']; import gguf, yaml; \
assert yaml.__file__.startswith('${STAGE}'), yaml.__file__; print('gguf-py imports, yaml from', yaml.__file__)" >&2 \
        || log "warning: the staged gguf-py does not import here (numpy missing?)"
}

pack() {
    mkdir -p "${ART}"
    log "packing ${TARBALL}"
    XZ_OPT="-9 -T${JOBS}" tar cJf "${TARBALL}.partial" --owner=0 --group=0 -C "${STAGE_PARENT}" llama
    mv -f "${TARBALL}.partial" "${TARBALL}"
    # gpu-bench.sh unpacks the tarball only where no .gpu-artifacts/llama/ exists: a stale one would
    # win, and an unpacked one would travel in the carry beside the tarball.
    if [[ -e "${ART}/llama" ]]; then
        log "removing the stale ${ART}/llama/ (gpu-bench.sh unpacks the tarball)"
        rm -rf "${ART:?}/llama"
    fi
}

report() {
    log "result: ${TARBALL} ($(du -h "${TARBALL}" | cut -f1); unpacked $(du -sh "${STAGE}" | cut -f1) in ${STAGE})"
    local f
    for f in llama-bench llama-completion; do
        echo "${f}: $(readelf -d "${STAGE}/${f}" | sed -n 's/.*(\(NEEDED\|RUNPATH\|RPATH\)).*\[\(.*\)\]/\1=\2/p' | tr '\n' ' ')" >&2
    done
    echo "libraries:" >&2
    ls -la "${STAGE}" | grep '\.so' >&2
}

main() {
    check_tools
    fetch_wheels
    assemble_cuda
    unpack_source
    build
    stage
    pack
    report
    echo "${TARBALL}"
}

main "$@"
exit 0
