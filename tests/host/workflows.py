"""The example workflows: built from compact specs against a live ComfyUI's /object_info, and checked.

``python tests/host/workflows.py --server http://127.0.0.1:8188`` rewrites ``example_workflows/*.json`` (with
the pack loaded in that server) and, from each, its API-format twin ``example_workflows/api/<name>_api.json``
(what the frontend's "Export (API)" writes, made by ``api_workflow``), so every workflow in ``examples()`` has
both. The API files live in a subfolder because ComfyUI lists ``example_workflows/*.json`` (not recursively)
as templates, and an API file is no template. The host tests run ``check_workflow`` and ``check_api_workflow``
on the committed files.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
# Nodes that exist only in the frontend.
FRONTEND_NODES = {"MarkdownNote": ["text"], "Note": ["text"]}
# Combos listing model files: the example names need not exist on the machine that checks them.
FILE_COMBOS = {"model_name", "vae_name", "clip_name", "clip_name1", "clip_name2", "lora_name", "image", "file"}
EXAMPLES = Path(__file__).resolve().parents[2] / "example_workflows"
API_EXAMPLES = EXAMPLES / "api"

MODELS_NOTE = """## Model files

| file | folder |
| --- | --- |
| `{transformer}` (or its fp8 / diffusers version) | `models/diffusion_models/` (`models/diffusers/` for a folder) |
| `llava_llama3_fp16.safetensors`, `clip_l.safetensors` | `models/text_encoders/` |
| `sigclip_vision_patch14_384.safetensors` | `models/clip_vision/` |
| `hunyuan_video_vae_bf16.safetensors` | `models/vae/` |

{extra}"""


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def options_of(spec):
    return spec[0] if isinstance(spec[0], list) else spec[1].get("options")


def ordered_inputs(info: dict):
    """(name, spec, optional) of a node's inputs in the order the frontend builds its widgets."""
    order = info.get("input_order", {})
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in order.get(section, list(specs)):
            yield name, specs[name], section == "optional"


def widget_values(info: dict, given: dict) -> list:
    values = []
    for name, spec, _ in ordered_inputs(info):
        if not is_widget(spec):
            continue
        options = spec[1] if len(spec) > 1 else {}
        default = options.get("default", (options_of(spec) or [""])[0] if options_of(spec) is not None else None)
        value = given.get(name, default)
        values.append(default if isinstance(value, tuple) else value)  # a linked widget keeps its default
        if options.get("control_after_generate"):
            values.append("fixed")
        if options.get("image_upload") or options.get("video_upload"):
            values.append("image")
    return values


def depths(nodes: dict) -> dict:
    """Column of each node: the length of its longest chain of inputs."""
    memo = {}

    def depth(name):
        if name not in memo:
            sources = [v[0] for v in nodes[name][1].values() if isinstance(v, tuple)]
            memo[name] = 1 + max((depth(s) for s in sources), default=-1)
        return memo[name]

    return {name: depth(name) for name in nodes}


def build_workflow(spec: dict, object_info: dict) -> dict:
    """A frontend (UI-format) workflow from ``{"nodes": {name: (type, {input: value or (node, slot)})}, "note": md}``."""
    nodes, ids = spec["nodes"], {name: i + 1 for i, name in enumerate(spec["nodes"])}
    columns, rows = depths(nodes), {}
    out_nodes, links = [], []
    for name, (node_type, given) in nodes.items():
        info = object_info[node_type]
        column = columns[name]
        y = rows.get(column, 80)
        node = {"id": ids[name], "type": node_type, "pos": [60 + 400 * column, y], "size": [340, 0],
                "flags": {}, "order": ids[name], "mode": 0, "inputs": [], "outputs": [],
                "properties": {"Node name for S&R": node_type}, "widgets_values": widget_values(info, given)}
        height = 60 + 26 * (len(node["widgets_values"]) + len(info["output"]))
        for input_name, input_spec, _ in ordered_inputs(info):
            value = given.get(input_name)
            linked = isinstance(value, tuple)
            if not linked and is_widget(input_spec):
                continue
            entry = {"name": input_name, "type": input_spec[0] if not is_widget(input_spec) else None, "link": None}
            if linked:
                source, slot = value
                source_type = object_info[nodes[source][0]]["output"][slot]
                entry["link"] = len(links) + 1
                links.append([entry["link"], ids[source], slot, ids[name], len(node["inputs"]), source_type])
                if is_widget(input_spec):
                    entry.update(type=source_type, widget={"name": input_name})
            height += 26
            node["inputs"].append(entry)
        node["size"][1] = height
        rows[column] = y + height + 60
        for slot, (output_type, output_name) in enumerate(zip(info["output"], info["output_name"])):
            node["outputs"].append({"name": output_name, "type": output_type, "links": [], "slot_index": slot})
        out_nodes.append(node)
    by_id = {n["id"]: n for n in out_nodes}
    for link_id, source, slot, *_ in links:
        by_id[source]["outputs"][slot]["links"].append(link_id)
    note_id = len(out_nodes) + 1
    out_nodes.append({"id": note_id, "type": "MarkdownNote", "pos": [60, rows.get(0, 80) + 40], "size": [520, 420],
                      "flags": {}, "order": 0, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                      "widgets_values": [spec["note"]], "title": "Read me: model files"})
    return {"last_node_id": note_id, "last_link_id": len(links), "nodes": out_nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def check_workflow(workflow: dict, object_info: dict) -> list[str]:
    """Problems in a UI-format workflow: unknown node types, mismatched links, invalid widget values."""
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        node_type = node["type"]
        if node_type in FRONTEND_NODES:
            continue
        if node_type not in object_info:
            problems.append(f"node {node['id']}: unknown type {node_type}")
            continue
        info = object_info[node_type]
        expected = widget_values(info, {})
        values = node.get("widgets_values", [])
        if not len(expected) - optional_tail(info) <= len(values) <= len(expected):
            problems.append(f"{node_type}: {len(values)} widget values, expected {len(expected)}")
            continue
        for name, spec, value in widget_items(info, values):
            problems += check_value(node_type, name, spec, value)
    for link_id, source, slot, target, target_slot, link_type in workflow["links"]:
        source_node, target_node = nodes.get(source), nodes.get(target)
        if source_node is None or target_node is None:
            problems.append(f"link {link_id} joins missing nodes")
            continue
        output_type = object_info[source_node["type"]]["output"][slot]
        target_input = target_node["inputs"][target_slot]
        accepted = input_type(object_info[target_node["type"]], target_input["name"])
        if not (output_type == target_input["type"] == link_type == accepted):
            problems.append(f"link {link_id}: {source_node['type']} {output_type} -> {target_node['type']}."
                            f"{target_input['name']} {target_input['type']}")
        if target_input.get("link") != link_id:
            problems.append(f"link {link_id} is not recorded on its target input")
    return problems


def optional_tail(info: dict) -> int:
    """How many widget values at the end belong to optional inputs: a workflow saved before those inputs
    existed lacks them, and the frontend fills in their defaults."""
    slots = []
    for _, spec, optional in ordered_inputs(info):
        if is_widget(spec):
            options = spec[1] if len(spec) > 1 else {}
            slots += [optional] * (1 + bool(options.get("control_after_generate"))
                                   + bool(options.get("image_upload") or options.get("video_upload")))
    count = 0
    while count < len(slots) and slots[-1 - count]:
        count += 1
    return count


def widget_items(info: dict, values: list):
    """(name, spec, value) of each widget in a node's ``widgets_values``, without the frontend's extra values
    (a seed's control_after_generate, an upload button); a saved workflow's missing trailing optional widgets
    are left out."""
    index = 0
    for name, spec, _ in ordered_inputs(info):
        if not is_widget(spec):
            continue
        if index >= len(values):
            return
        yield name, spec, values[index]
        options = spec[1] if len(spec) > 1 else {}
        index += 1 + bool(options.get("control_after_generate"))
        index += bool(options.get("image_upload") or options.get("video_upload"))


def api_workflow(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI-format workflow, as the frontend's "Export (API)" writes it:
    ``{node id: {"inputs": {name: value or [source id, output index]}, "class_type", "_meta": {"title"}}}``,
    without frontend-only nodes. Node ids stay those of the UI workflow, so ``--set 10.seed=7`` names the
    node numbered 10 in the UI."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_NODES:
            continue
        info = object_info[node["type"]]
        inputs = {name: value for name, _, value in widget_items(info, node["widgets_values"])}
        for entry in node["inputs"]:
            if entry["link"] is not None:
                _, source, slot, *_ = links[entry["link"]]
                inputs[entry["name"]] = [str(source), slot]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title", info["display_name"])}}
    return prompt


def check_api_workflow(prompt: dict, object_info: dict) -> list[str]:
    """Problems in an API-format prompt: unknown node types or inputs, missing required inputs, links to
    missing nodes or outputs of the wrong type, invalid widget values, no output node."""
    problems = []
    for node_id, node in prompt.items():
        node_type, inputs = node.get("class_type"), node.get("inputs", {})
        if node_type not in object_info:
            problems.append(f"node {node_id}: unknown type {node_type}")
            continue
        info = object_info[node_type]
        known = set()
        for name, spec, optional in ordered_inputs(info):
            known.add(name)
            where = f"node {node_id} ({node_type}).{name}"
            if name not in inputs:
                if not optional:
                    problems.append(f"{where} is required but missing")
                continue
            value = inputs[name]
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                problems += check_api_link(where, value, input_type(info, name), prompt, object_info)
            elif not is_widget(spec):
                problems.append(f"{where} = {value!r}: a {spec[0]} input takes a link [node id, output index]")
            else:
                problems += check_value(node_type, name, spec, value)
        problems += [f"node {node_id} ({node_type}) has an unknown input {name!r}" for name in set(inputs) - known]
        if "title" not in node.get("_meta", {}):
            problems.append(f"node {node_id} ({node_type}) has no _meta.title")
    if not any(object_info.get(node.get("class_type"), {}).get("output_node") for node in prompt.values()):
        problems.append("no output node: ComfyUI refuses a prompt without one")
    return problems


def check_api_link(where: str, link: list, accepted, prompt: dict, object_info: dict) -> list[str]:
    source, slot = link
    if source not in prompt or prompt[source].get("class_type") not in object_info:
        return [f"{where} links to node {source}, which is missing or unknown"]
    outputs = object_info[prompt[source]["class_type"]]["output"]
    if not (isinstance(slot, int) and 0 <= slot < len(outputs)):
        return [f"{where} links to output {slot!r} of node {source}, which has {len(outputs)}"]
    if outputs[slot] != accepted:
        return [f"{where} accepts {accepted} but node {source} output {slot} is {outputs[slot]}"]
    return []


def input_type(info: dict, name: str):
    """The socket type an input accepts (a widget input accepts its widget's type)."""
    for input_name, spec, _ in ordered_inputs(info):
        if input_name == name:
            return "COMBO" if isinstance(spec[0], list) else spec[0]
    return None


def check_value(node_type, name, spec, value) -> list[str]:
    options = spec[1] if len(spec) > 1 else {}
    kind = "COMBO" if isinstance(spec[0], list) else spec[0]
    where = f"{node_type}.{name} = {value!r}"
    if kind == "COMBO":
        if name not in FILE_COMBOS and value not in options_of(spec):
            return [f"{where} is not one of {options_of(spec)}"]
    elif kind in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "INT" and value != int(value)):
            return [f"{where} is not a number of type {kind}"]
        if value < options.get("min", float("-inf")) or value > options.get("max", float("inf")):
            return [f"{where} is outside [{options.get('min')}, {options.get('max')}]"]
    elif kind == "BOOLEAN" and not isinstance(value, bool):
        return [f"{where} is not a boolean"]
    elif kind == "STRING" and not isinstance(value, str):
        return [f"{where} is not text"]
    return []


# ----------------------------------------------------------------------------------------------- the examples

def conditioning_nodes(transformer: str) -> dict:
    """Loaders, the start image and its encodings: shared by every example."""
    return {
        "image": ("LoadImage", {"image": "example.png"}),
        "bucket": ("FramePackBucket", {"image": ("image", 0), "resolution": 640, "upscale_method": "lanczos"}),
        "vae": ("VAELoader", {"vae_name": "hunyuan_video_vae_bf16.safetensors"}),
        "encode": ("VAEEncode", {"pixels": ("bucket", 0), "vae": ("vae", 0)}),
        "clip_vision": ("CLIPVisionLoader", {"clip_name": "sigclip_vision_patch14_384.safetensors"}),
        "vision": ("CLIPVisionEncode", {"clip_vision": ("clip_vision", 0), "image": ("bucket", 0), "crop": "none"}),
        "clip": ("DualCLIPLoader", {"clip_name1": "clip_l.safetensors", "clip_name2": "llava_llama3_fp16.safetensors",
                                    "type": "hunyuan_video"}),
        "model": ("FramePackModelLoader", {"model_name": transformer, "weight_dtype": "default"}),
    }


def output_nodes(prefix: str) -> dict:
    return {
        "decode": ("VAEDecodeTiled", {"samples": ("sampler", 0), "vae": ("vae", 0), "tile_size": 256, "overlap": 64,
                                      "temporal_size": 64, "temporal_overlap": 8}),
        "video": ("CreateVideo", {"images": ("decode", 0), "fps": 30.0}),
        "save": ("SaveVideo", {"video": ("video", 0), "filename_prefix": f"video/{prefix}"}),
    }


def sampler(mode: str, **inputs) -> tuple:
    return ("FramePackSampler", {"model": ("model", 0), "positive": ("prompt", 0), "start_latent": ("encode", 0),
                                 "clip_vision_output": ("vision", 0), "sampling_mode": mode, **inputs})


I2V, F1 = "FramePackI2V_HY_bf16.safetensors", "FramePack_F1_I2V_HY_20250503_bf16.safetensors"
PROMPT = "The girl dances gracefully, with clear movements, full of charm."


def examples() -> dict:
    def prompt(text=PROMPT):
        return ("CLIPTextEncode", {"text": text, "clip": ("clip", 0)})

    end_image = {
        "end_image": ("LoadImage", {"image": "example_end.png"}),
        "end_scaled": ("ImageScale", {"image": ("end_image", 0), "upscale_method": "lanczos", "width": ("bucket", 1),
                                      "height": ("bucket", 2), "crop": "center"}),
        "end_encode": ("VAEEncode", {"pixels": ("end_scaled", 0), "vae": ("vae", 0)}),
        "end_vision": ("CLIPVisionEncode", {"clip_vision": ("clip_vision", 0), "image": ("end_scaled", 0),
                                            "crop": "none"}),
    }
    return {
        "framepack_image_to_video": {
            "nodes": {**conditioning_nodes(I2V), "prompt": prompt(),
                      "sampler": sampler("inverted_anti_drifting", length=5.0), **output_nodes("framepack_i2v")},
            "note": MODELS_NOTE.format(transformer=I2V, extra="Image to video with inverted anti-drifting sampling: "
                                       "the video is generated from its end back towards your image, so every "
                                       "section stays close to it. Put your image in LoadImage."),
        },
        "framepack_f1_forward": {
            "nodes": {**conditioning_nodes(F1), "prompt": prompt(),
                      "sampler": sampler("vanilla", length=5.0), **output_nodes("framepack_f1")},
            "note": MODELS_NOTE.format(transformer=F1, extra="FramePack-F1: forward (vanilla) sampling, section after "
                                       "section; livelier motion, more drift on long videos (see the colour node)."),
        },
        "framepack_end_frame": {
            "nodes": {**conditioning_nodes(I2V), **end_image, "prompt": prompt(),
                      "sampler": sampler("inverted_anti_drifting", length=4.0, end_latent=("end_encode", 0),
                                         end_clip_vision_output=("end_vision", 0), interpolate_image_embeddings=True),
                      **output_nodes("framepack_end_frame")},
            "note": MODELS_NOTE.format(transformer=I2V, extra="Start and end frame: the end image is resized to the "
                                       "start image's bucket, guides the first generated section (the end of the "
                                       "video), and the image embedding blends from start to end."),
        },
        "framepack_keyframes_prompts": {
            "nodes": {**conditioning_nodes(I2V),
                      "prompts": ("FramePackTimestampedPrompts", {
                          "clip": ("clip", 0),
                          "text": "[0s: The man waves at the camera.] [3s: The man turns and walks away.] "
                                  "[6s-8s: The man stops and looks back.]"}),
                      "prompt": prompt("The man waves at the camera."),
                      "key_image": ("LoadImage", {"image": "example_keyframe.png"}),
                      "key_scaled": ("ImageScale", {"image": ("key_image", 0), "upscale_method": "lanczos",
                                                    "width": ("bucket", 1), "height": ("bucket", 2), "crop": "center"}),
                      "key_encode": ("VAEEncode", {"pixels": ("key_scaled", 0), "vae": ("vae", 0)}),
                      "keyframes": ("FramePackKeyframes", {"latent": ("key_encode", 0), "seconds": 5.0}),
                      "schedule": ("FramePackSchedule", {"schedule": "default", "latent_window_size": 9,
                                                         "preview_seconds": 10.0}),
                      "sampler": sampler("inverted_anti_drifting", length=10.0, prompts=("prompts", 0),
                                         keyframes=("keyframes", 0), schedule=("schedule", 0),
                                         prompt_blend_seconds=1.0),
                      **output_nodes("framepack_keyframes")},
            "note": MODELS_NOTE.format(transformer=I2V, extra="Prompts over time ('[start: prompt]', '[start-end: "
                                       "prompt]') and a keyframe the video reaches at 5 s."),
        },
        "framepack_extend_video": {
            "nodes": {**conditioning_nodes(F1),
                      "load_video": ("LoadVideo", {"file": "example.mp4"}),
                      "components": ("GetVideoComponents", {"video": ("load_video", 0)}),
                      "video_scaled": ("ImageScale", {"image": ("components", 0), "upscale_method": "lanczos",
                                                      "width": ("bucket", 1), "height": ("bucket", 2),
                                                      "crop": "center"}),
                      "video_encode": ("VAEEncodeTiled", {"pixels": ("video_scaled", 0), "vae": ("vae", 0),
                                                          "tile_size": 256, "overlap": 64, "temporal_size": 64,
                                                          "temporal_overlap": 8}),
                      "prompt": prompt("The camera keeps following the runner along the beach."),
                      "sampler": sampler("vanilla", length=4.0, initial_latents=("video_encode", 0)),
                      **output_nodes("framepack_extended")},
            "note": MODELS_NOTE.format(transformer=F1, extra="Extends a video: its latents are the history the new "
                                       "sections continue from (F1, vanilla). LoadImage takes the video's first frame "
                                       "(or any image of the same scene) for the image embedding and the bucket."),
        },
        "framepack_long_video": {
            "nodes": {**conditioning_nodes(F1), "prompt": prompt(),
                      "video_output": ("FramePackVideoOutput", {"vae": ("vae", 0), "filename_prefix":
                                                                "video/framepack_long", "crf": 16,
                                                                "pixel_format": "yuv420p", "tile_size": 0}),
                      "sampler": sampler("vanilla", length=120.0, video_output=("video_output", 0)),
                      "save": ("SaveVideo", {"video": ("sampler", 1), "filename_prefix": "video/framepack_long"})},
            "note": MODELS_NOTE.format(transformer=F1, extra="A two-minute video in bounded memory: FramePack Video "
                                       "Output makes the sampler decode every section as soon as it is finished and "
                                       "append it to an MP4, which grows on the sampler node while later sections "
                                       "sample. Cancel at any time: the video so far is saved (_partial), and "
                                       "queueing again continues where it stopped."),
        },
        "framepack_custom_sampling": {
            "nodes": {**custom_sampling_nodes(), "prompt": prompt(), "negative": prompt(""),
                      "conditioning": ("FramePackImageToVideo", {"positive": ("prompt", 0), "negative": ("negative", 0),
                                                                 "distilled_cfg": 10.0, "start_latent": ("encode", 0),
                                                                 "clip_vision_output": ("vision", 0)}),
                      "latent": ("EmptyHunyuanLatentVideo", {"width": 640, "height": 640, "length": 145,
                                                             "batch_size": 1}),
                      "noise": ("RandomNoise", {"noise_seed": 31337}),
                      "guider": ("CFGGuider", {"model": ("model", 0), "positive": ("conditioning", 0),
                                               "negative": ("conditioning", 1), "cfg": 1.0}),
                      "section_sampler": ("FramePackSectionSampler", {"sampling_mode": "inverted_anti_drifting",
                                                                      "sampler_name": "unipc_bh1", "cfg_rescale": 0.0}),
                      "sigmas": ("FramePackSigmas", {"latent": ("latent", 0), "steps": 25, "shift": 0.0}),
                      "sampler": ("SamplerCustomAdvanced", {"noise": ("noise", 0), "guider": ("guider", 0),
                                                            "sampler": ("section_sampler", 0), "sigmas": ("sigmas", 0),
                                                            "latent_image": ("latent", 0)}),
                      **output_nodes("framepack_custom")},
            "note": MODELS_NOTE.format(transformer=I2V, extra="FramePack in core ComfyUI's custom sampling: FramePack "
                                       "Image To Video puts the start image on the conditioning, the FramePack "
                                       "Section Sampler runs the section loop inside SamplerCustomAdvanced with "
                                       "core's CFGGuider (cfg 1: distilled guidance only) and RandomNoise, FramePack "
                                       "Sigmas gives the steps per section. The video's length comes from "
                                       "EmptyHunyuanLatentVideo (145 frames: 4 sections, 4.8 s); its size must be "
                                       "the image's (640 x 640 here; for other aspect ratios FramePack Bucket picks "
                                       "the size)."),
        },
    }


def custom_sampling_nodes() -> dict:
    """The shared loaders, with the square example image scaled to its 640 x 640 bucket by core's ImageScale."""
    nodes = conditioning_nodes(I2V)
    nodes["bucket"] = ("ImageScale", {"image": ("image", 0), "upscale_method": "lanczos", "width": 640, "height": 640,
                                      "crop": "center"})
    return nodes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=EXAMPLES)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="write only these examples")
    args = parser.parse_args()
    with urllib.request.urlopen(args.server + "/object_info") as response:
        object_info = json.loads(response.read())
    args.out.mkdir(exist_ok=True)
    for name, spec in examples().items():
        if args.only and name not in args.only:
            continue
        workflow = build_workflow(spec, object_info)
        problems = check_workflow(workflow, object_info)
        if problems:
            raise SystemExit(f"{name}: {problems}")
        (args.out / f"{name}.json").write_text(json.dumps(workflow, indent=1) + "\n")
        prompt = api_workflow(workflow, object_info)
        problems = check_api_workflow(prompt, object_info)
        if problems:
            raise SystemExit(f"{name} (API): {problems}")
        (args.out / "api").mkdir(exist_ok=True)
        (args.out / "api" / f"{name}_api.json").write_text(json.dumps(prompt, indent=1) + "\n")


if __name__ == "__main__":
    main()
