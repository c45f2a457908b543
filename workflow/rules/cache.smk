# One job per chunk of videos (see actloc.chunks): the backbone is loaded once per chunk and the
# next video decoded while the current one runs. Stores are written beside the chunk's manifest;
# one already complete with the same settings is kept, so a rerun redoes only what is missing.
rule cache:
    input:
        decoded="results/{ds}/videos/chunks/{chunk}.json",
        backbone=backbone_json,
        annotations=ancient("results/{ds}/annotations.json"),  # as in demo_data
    output:
        "results/{ds}/cache/{backbone}/chunks/{chunk}.json",
    log:
        "results/{ds}/logs/cache/{backbone}/{chunk}.log",
    benchmark:
        "results/{ds}/benchmarks/cache/{backbone}/{chunk}.tsv"
    wildcard_constraints:
        backbone="|".join(map(re.escape, BACKBONES + LOFI)) or "no-backbone",
    conda:
        "../../envs/actloc.yaml"
    # One thread a job: on CPUs, parallel jobs use the cores better than intra-op threads.
    threads: 1
    resources:
        mem_mb=memory(lambda wildcards: base_backbone(wildcards)["mem_mb"]),
        runtime=chunk_runtime(5),
        gpu=GPU,
    params:
        videos=decoded_videos,
        frames=lambda wildcards: dataset(wildcards)["snippets"]["frames"],
        stride=lambda wildcards: dataset(wildcards)["snippets"]["stride"],
        batch=lambda wildcards: base_backbone(wildcards)["batch"],
        device=config["device"],
    shell:
        "actloc cache {params.videos:q} --backbone {input.backbone:q}"
        " --out-dir results/{wildcards.ds}/cache/{wildcards.backbone} --manifest {output:q}"
        " --snippet-frames {params.frames} --stride {params.stride} --batch {params.batch}"
        " --device {params.device:q} --threads {threads} 2> {log:q}"


rule cache_index:
    input:
        annotations="results/{ds}/annotations.json",
        chunks=per_chunk("results/{ds}/cache/{backbone}/chunks/{chunk}.json"),
        backbone=backbone_json,
    output:
        "results/{ds}/cache/{backbone}.json",
    log:
        "results/{ds}/logs/cache_index/{backbone}.log",
    wildcard_constraints:
        backbone="|".join(map(re.escape, BACKBONES + LOFI)) or "no-backbone",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        subsets=subsets,
        frames=lambda wildcards: dataset(wildcards)["snippets"]["frames"],
        stride=lambda wildcards: dataset(wildcards)["snippets"]["stride"],
    shell:
        "actloc cache-index --annotations {input.annotations:q} --subsets {params.subsets}"
        " --folder results/{wildcards.ds}/cache/{wildcards.backbone} --backbone {input.backbone:q}"
        " --snippet-frames {params.frames} --stride {params.stride} --out {output:q} 2> {log:q}"


rule import_features:
    input:
        source=lambda wildcards: dataset(wildcards)["features"][wildcards.backbone][
            "path"
        ],
        annotations="results/{ds}/annotations.json",
    output:
        stores=directory("results/{ds}/cache/{backbone}"),
        index="results/{ds}/cache/{backbone}.json",
    log:
        "results/{ds}/logs/import_features/{backbone}.log",
    wildcard_constraints:
        backbone="|".join(map(re.escape, IMPORTED)) or "no-imported-features",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(8000),
        runtime=60,
    params:
        args=lambda wildcards: import_options(dataset(wildcards), wildcards.backbone),
        subsets=subsets,
    shell:
        "actloc import-features {input.source:q} --annotations {input.annotations:q}"
        " --subsets {params.subsets}"
        " --name {wildcards.backbone:q} --out-dir {output.stores:q} --index {output.index:q}"
        " {params.args} 2> {log:q}"
