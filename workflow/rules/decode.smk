# One job per chunk of videos (see actloc.chunks); each video's .mp4 and .json are written
# beside the chunk's manifest, and a video already decoded from the same source at the same
# settings is kept, so a rerun after a kill redoes only what is missing.
rule decode:
    input:
        decode_inputs,
        ancient("results/{ds}/annotations.json"),  # as in demo_data
    output:
        "results/{ds}/videos/chunks/{chunk}.json",
    log:
        "results/{ds}/logs/decode/{chunk}.log",
    benchmark:
        "results/{ds}/benchmarks/decode/{chunk}.tsv"
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=chunk_runtime(2),
    params:
        videos=chunk_videos,
        sources=source_videos,
        fps=lambda wildcards: dataset(wildcards)["decode"]["fps"],
        short_side=lambda wildcards: dataset(wildcards)["decode"]["short_side"],
        damage=lambda wildcards: dataset(wildcards)["decode"]["damage"],
        tolerance=lambda wildcards: dataset(wildcards)["decode"]["duration_tolerance"],
    shell:
        "actloc decode {params.sources:q} --names {params.videos:q} --out-dir results/{wildcards.ds}/videos"
        " --fps {params.fps} --short-side {params.short_side} --damage {params.damage}"
        " --annotations results/{wildcards.ds}/annotations.json --duration-tolerance {params.tolerance}"
        " --threads {threads} --manifest {output:q} 2> {log:q}"


rule decode_index:
    input:
        annotations="results/{ds}/annotations.json",
        chunks=per_chunk("results/{ds}/videos/chunks/{chunk}.json"),
    output:
        "results/{ds}/videos.json",
    log:
        "results/{ds}/logs/decode_index.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        subsets=subsets,
    shell:
        "actloc decode-index --annotations {input.annotations:q} --subsets {params.subsets}"
        " --folder results/{wildcards.ds}/videos --out {output:q} 2> {log:q}"
