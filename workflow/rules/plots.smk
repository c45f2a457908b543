rule plots:
    input:
        table="results/{ds}/map.csv",
        per_class=per_method("per_class.csv"),
        detections=per_method("detections.json"),
        annotations="results/{ds}/annotations.json",
    output:
        map=report(
            "results/{ds}/plots/map_vs_tiou.png",
            caption="../report/map_vs_tiou.rst",
            category="{ds}",
            labels={"figure": "mAP vs tIoU"},
        ),
        per_class=report(
            "results/{ds}/plots/per_class_ap.png",
            caption="../report/per_class_ap.rst",
            category="{ds}",
            labels={"figure": "per-class AP"},
        ),
        timelines=report(
            "results/{ds}/plots/timelines.png",
            caption="../report/timelines.rst",
            category="{ds}",
            labels={"figure": "detection timelines"},
        ),
    log:
        "results/{ds}/logs/plots.log",
    conda:
        "../../envs/actloc.yaml"
    threads: 1
    resources:
        mem_mb=memory(2000),
        runtime=10,
    params:
        methods=methods_of,
        subset=lambda wildcards: dataset(wildcards)["test_subset"],
    shell:
        "actloc plots --table {input.table:q} --methods {params.methods} --per-class {input.per_class:q}"
        " --detections {input.detections:q} --annotations {input.annotations:q} --subset {params.subset}"
        " --out-map {output.map:q} --out-per-class {output.per_class:q} --out-timelines {output.timelines:q}"
        " 2> {log:q}"
