# A folder of unannotated videos (a dataset of type videos): the methods trained on its `model`
# dataset detect actions in them, one job per chunk of videos (see actloc.chunks), each decoding
# and caching its videos as the model's dataset was, then detecting; a rerun keeps what is done.
rule detect:
    input:
        sources=source_videos,
        model=detect_model,
        backbone=detect_backbone,
        annotations=ancient("results/{ds}/annotations.json"),  # as in demo_data
    output:
        "results/{ds}/{method}/detect/chunks/{chunk}.json",
    log:
        "results/{ds}/logs/detect/{method}/{chunk}.log",
    benchmark:
        "results/{ds}/benchmarks/detect/{method}/{chunk}.tsv"
    wildcard_constraints:
        ds="|".join(DETECT_DATASETS) or "no-videos-dataset",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(lambda wildcards: detect_backbone_entry(wildcards)["mem_mb"]),
        runtime=chunk_runtime(5),
        gpu=GPU,
    params:
        batch=lambda wildcards: detect_backbone_entry(wildcards)["batch"],
        device=config["device"],
    shell:
        "actloc detect {input.sources:q} --model {input.model:q} --backbone {input.backbone:q}"
        " --out-dir results/{wildcards.ds}/{wildcards.method}/detect"
        " --cache-dir results/{wildcards.ds}/{wildcards.method}/detect/cache --batch {params.batch}"
        " --device {params.device:q} --threads {threads} --manifest {output:q} 2> {log:q}"


rule detect_index:
    input:
        per_chunk("results/{ds}/{method}/detect/chunks/{chunk}.json"),
    output:
        "results/{ds}/{method}/detections.json",
    log:
        "results/{ds}/logs/detect_index/{method}.log",
    wildcard_constraints:
        ds="|".join(DETECT_DATASETS) or "no-videos-dataset",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    shell:
        "actloc detect-index {input:q} --out {output:q} 2> {log:q}"
