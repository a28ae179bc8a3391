// Unit tests for the pure front-end logic of web/ (kept out of web/, which ComfyUI serves to every browser).
// Run: node --experimental-detect-module --test tests/web
import test from "node:test";
import assert from "node:assert/strict";
import {
    ASPECT_PRESETS, BLOCK_CLASS_COLORS, CUSTOM, STYLE_NONE, STYLE_PRESETS,
    applyStyle, detectStyle, matchPreset, presetByLabel, presetLabels, rgbCss, snapSize, stripStyle, styleNames, trimSeparators,
} from "../../web/zimage_presets.js";

const RATIOS = ["1:1", "4:3", "3:4", "3:2", "2:3", "16:9", "9:16", "21:9", "9:21"];

test("18 presets: 9 ratios at the 1024 and 2048 classes", () => {
    assert.equal(ASPECT_PRESETS.length, 18);
    for (const cls of [1024, 2048]) {
        assert.deepEqual(ASPECT_PRESETS.filter((p) => p.cls === cls).map((p) => p.ratio), RATIOS);
    }
});

test("presets: multiples of 16, area within 1% of class^2, ratio within 1%", () => {
    for (const p of ASPECT_PRESETS) {
        assert.equal(p.width % 16, 0, p.label);
        assert.equal(p.height % 16, 0, p.label);
        const area = (p.width * p.height) / (p.cls * p.cls);
        assert.ok(Math.abs(area - 1) <= 0.01, `${p.label}: area ratio ${area}`);
        const [a, b] = p.ratio.split(":").map(Number);
        const err = Math.abs(Math.log((p.width / p.height) / (a / b)));
        assert.ok(err <= 0.01, `${p.label}: aspect error ${err}`);
    }
});

test("preset labels are unique, 'custom' first, and round-trip", () => {
    const labels = presetLabels();
    assert.equal(labels[0], CUSTOM);
    assert.equal(new Set(labels).size, labels.length);
    assert.equal(presetByLabel(CUSTOM), null);
    for (const p of ASPECT_PRESETS) {
        assert.equal(presetByLabel(p.label), p);
        assert.equal(matchPreset(p.width, p.height), p.label);
        assert.equal(matchPreset(String(p.width), String(p.height)), p.label);
    }
    assert.equal(matchPreset(1000, 1000), CUSTOM);
    assert.equal(matchPreset(768, 768), CUSTOM);
});

test("snapSize rounds to the nearest multiple of 16 and clamps", () => {
    assert.equal(snapSize(1024), 1024);
    assert.equal(snapSize(1001), 1008);
    assert.equal(snapSize(1000), 1008); // tie rounds up
    assert.equal(snapSize(999), 992);
    assert.equal(snapSize(7), 16);
    assert.equal(snapSize(5000, 256, 4096), 4096);
    assert.equal(snapSize(100, 256, 4096), 256);
    assert.equal(snapSize(1000, 250, 1010), 1008);
    assert.equal(snapSize(2000, 250, 1010), 1008); // max shrunk to a multiple of 16
    assert.equal(snapSize(10, 250, 1010), 256); // min grown to a multiple of 16
    assert.equal(snapSize(NaN, 64, 512), 64);
    assert.equal(snapSize("1030"), 1024);
    for (let v = 0; v < 5000; v += 7) {
        const s = snapSize(v, 16, 4096);
        assert.equal(s % 16, 0);
        assert.ok(s >= 16 && s <= 4096);
        assert.equal(snapSize(s, 16, 4096), s); // idempotent
    }
});

test("style names: the ten presets, none first", () => {
    assert.deepEqual(styleNames(), ["none", "photorealistic", "cinematic", "anime", "digital art", "oil painting",
        "watercolor", "3D render", "fantasy", "sci-fi"]);
    assert.equal(STYLE_PRESETS[STYLE_NONE], "");
});

test("applyStyle is idempotent, replaces the previous suffix, and 'none' removes it", () => {
    const bases = ["a red fox in snow", "portrait of an old man,\nsoft light", "", "  ", "cat, "];
    const names = styleNames();
    for (const base of bases) {
        for (const s of names) {
            const once = applyStyle(base, s);
            assert.equal(applyStyle(once, s), once, `idempotent ${s} on ${JSON.stringify(base)}`);
            assert.equal(detectStyle(once), s === STYLE_NONE || !STYLE_PRESETS[s] ? STYLE_NONE : s);
            for (const t of names) {
                // switching styles == applying the new one directly (for 'none': the prompt as the user left
                // it, minus trailing ", " separators once a style had been added)
                const direct = t === STYLE_NONE && s !== STYLE_NONE ? trimSeparators(base) : applyStyle(base, t);
                assert.equal(applyStyle(once, t), direct, `${s} -> ${t} on ${JSON.stringify(base)}`);
            }
            if (s !== STYLE_NONE) {
                assert.ok(once.endsWith(STYLE_PRESETS[s]));
                assert.ok(!once.includes(",,"));
                assert.equal(stripStyle(once), trimSeparators(base));
            }
        }
        assert.equal(applyStyle(base, STYLE_NONE), base); // a prompt without a suffix is left untouched
    }
    assert.equal(applyStyle("a cat", "cinematic"), "a cat, " + STYLE_PRESETS.cinematic);
    assert.equal(applyStyle("", "anime"), STYLE_PRESETS.anime);
    assert.equal(applyStyle("a cat", "no such style"), "a cat");
});

test("a style phrase in the middle of a prompt is not treated as a suffix", () => {
    const text = `${STYLE_PRESETS.anime}, riding a bike`;
    assert.equal(detectStyle(text), STYLE_NONE);
    assert.equal(applyStyle(text, STYLE_NONE), text);
    assert.equal(detectStyle("anime style"), STYLE_NONE); // only the exact suffix counts
});

test("block class colours match the Python side", () => {
    assert.deepEqual(BLOCK_CLASS_COLORS.map((c) => [c.name, [...c.rgb]]), [
        ["subject", [230, 57, 70]], ["flat", [69, 123, 157]], ["detail", [244, 162, 97]],
    ]);
    assert.equal(rgbCss([230, 57, 70]), "rgb(230, 57, 70)");
});
