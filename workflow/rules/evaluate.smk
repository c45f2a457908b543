rule evaluate:
    input:
        detections="results/{ds}/{method}/detections.json",
        annotations="results/{ds}/annotations.json",
    output:
        map="results/{ds}/{method}/map.csv",
        per_class="results/{ds}/{method}/per_class.csv",
    log:
        "results/{ds}/logs/evaluate/{method}.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        subset=lambda wildcards: dataset(wildcards)["test_subset"],
        preset=lambda wildcards: dataset(wildcards)["eval_preset"],
        ambiguous=lambda wildcards: dataset(wildcards)["ambiguous"],
    shell:
        "actloc evaluate --annotations {input.annotations:q} --predictions {input.detections:q}"
        " --subset {params.subset} --preset {params.preset} --ambiguous {params.ambiguous}"
        " --out-map {output.map:q} --out-per-class {output.per_class:q} > {log:q} 2>&1"
