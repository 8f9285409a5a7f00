"""draw_result: post-processing and pipeline results drawn over their image with outlines and a legend, as PNG."""

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing.visualization import color_palette, draw_result

HEIGHT, WIDTH = 60, 80
NAMES = {0: "sky", 1: "road", 2: "car"}


def scene():
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    segmentation = torch.full((HEIGHT, WIDTH), -1)
    segmentation[40:] = 0
    segmentation[10:30, 10:30] = 1
    segmentation[10:30, 50:70] = 2
    segments = [{"id": 0, "label_id": 1, "score": 0.97}, {"id": 1, "label_id": 2, "score": 0.93}, {"id": 2, "label_id": 2, "score": 0.5}]
    return image, {"segmentation": segmentation, "segments_info": segments}


def legend_swatch(canvas, row):
    return canvas[4 + row * 14 + 5, WIDTH + 9]


def test_panoptic_result_colours_outlines_and_legend(tmp_path):
    image, result = scene()
    drawn = draw_result(image, result, NAMES, tmp_path / "result.png")
    saved = Image.open(tmp_path / "result.png")
    assert saved.format == "PNG" and saved.size == drawn.size and saved.width > WIDTH and saved.height == HEIGHT
    canvas = np.asarray(saved).astype(int)
    palette = color_palette(3)
    for segment_id, (row, col) in enumerate([(50, 40), (20, 20), (20, 60)]):  # inside each segment: blended colour
        expected = np.round(0.45 * 128 + 0.55 * np.array(palette[segment_id]))
        assert np.abs(canvas[row, col] - expected).max() <= 1
        assert tuple(legend_swatch(canvas, segment_id)) == palette[segment_id]  # one legend row per segment
    assert (canvas[5, 5] == 128).all()  # no segment: the image unchanged
    assert (canvas[29, 20] == 255).all() and (canvas[20, 29] == 255).all()  # outlines on segment borders
    for row in range(3):  # each legend row has text (dark pixels) right of its swatch
        text = canvas[4 + row * 14 : 4 + row * 14 + 12, WIDTH + 18 :]
        assert (text.sum(-1) < 200).any()
    assert not (canvas[4 + 3 * 14 :, WIDTH + 18 :].sum(-1) < 200).any()  # and nothing below the three rows


def test_pipeline_and_semantic_results_give_the_same_segments():
    image, result = scene()
    masks = [Image.fromarray(((result["segmentation"] == i).numpy() * 255).astype(np.uint8), "L") for i in range(3)]
    from_pipeline = draw_result(image, [{"score": 0.9, "label": "road", "mask": m} for m in masks])
    from_post = draw_result(image, result, NAMES)
    assert np.array_equal(np.asarray(from_pipeline)[:, :WIDTH], np.asarray(from_post)[:, :WIDTH])
    semantic = torch.where(result["segmentation"] >= 0, result["segmentation"], 0)  # class map: no void
    drawn = np.asarray(draw_result(image, semantic, NAMES)).astype(int)
    assert tuple(legend_swatch(drawn, 2)) == color_palette(3)[2] and not (drawn[:, :WIDTH] == 128).all(-1).any()


def test_class_colors_colour_segments_by_class_and_keep_instance_outlines():
    image, result = scene()
    result["segmentation"][10:30, 30:50] = 3  # a third car touching both: only outlines separate them
    result["segments_info"].append({"id": 3, "label_id": 2, "score": 0.6})
    car, road = (200, 0, 0), (0, 0, 200)
    canvas = np.asarray(draw_result(image, result, NAMES, class_colors={"car": car, "road": road})).astype(int)
    for row, col, color in [(20, 20, car), (20, 40, car), (20, 60, car), (50, 40, road)]:
        assert np.abs(canvas[row, col] - np.round(0.45 * 128 + 0.55 * np.array(color))).max() <= 1
    assert (canvas[20, 29] == 255).all() and (canvas[20, 49] == 255).all()  # the borders between the cars
    assert [tuple(legend_swatch(canvas, row)) for row in range(4)] == [road, car, car, car]
    unnamed = np.asarray(draw_result(image, result, NAMES, class_colors={"car": car})).astype(int)
    assert tuple(legend_swatch(unnamed, 0)) == color_palette(1)[0]  # classes without a colour keep the palette's


def test_bad_results():
    image, _ = scene()
    with pytest.raises(ValueError, match="non-empty pipeline result"):
        draw_result(image, [])
    with pytest.raises(ValueError, match=r"got shape \(2, 60, 80\)"):
        draw_result(image, torch.zeros(2, HEIGHT, WIDTH))
    with pytest.raises(ValueError, match=r"segment_map has shape \(5, 5\), the image is 60x80"):
        draw_result(image, torch.zeros(5, 5))
