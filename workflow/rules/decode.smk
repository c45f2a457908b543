rule decode:
    input:
        source_video,
    output:
        video="results/{ds}/videos/{video}.mp4",
        info="results/{ds}/videos/{video}.json",
    log:
        "results/{ds}/logs/decode/{video}.log",
    benchmark:
        "results/{ds}/benchmarks/decode/{video}.tsv"
    group:
        "videos"
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=30,
    params:
        fps=lambda wildcards: dataset(wildcards)["decode"]["fps"],
        short_side=lambda wildcards: dataset(wildcards)["decode"]["short_side"],
    shell:
        "actloc decode {input:q} --out {output.video:q} --fps {params.fps}"
        " --short-side {params.short_side} 2> {log:q}"


rule decode_index:
    input:
        annotations="results/{ds}/annotations.json",
        infos=lambda wildcards: [
            f"results/{wildcards.ds}/videos/{v}.json" for v in videos_of(wildcards)
        ],
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
