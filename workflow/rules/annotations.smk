def annotation_sources(wildcards):
    d = dataset(wildcards)
    if d["type"] == "thumos14":
        return sorted(
            str(p) for p in Path(d["annotations"]).glob("annotations_*/*.txt")
        )
    return [d["annotations"]] if "annotations" in d else []


checkpoint annotations:
    input:
        annotation_sources,
    output:
        json="results/{ds}/annotations.json",
        classes="results/{ds}/classes.txt",
    log:
        "results/{ds}/logs/annotations.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        type=lambda wildcards: dataset(wildcards)["type"],
        args=lambda wildcards: annotation_options(dataset(wildcards)),
    shell:
        "actloc annotations --type {params.type} {params.args}"
        " --out {output.json:q} --classes {output.classes:q} 2> {log:q}"
