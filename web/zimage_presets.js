// Pure, DOM-free logic for the Z-Image Turbo front-end extension (web/zimage.js).
// Kept separate so it can be unit-tested with Node (tests/web; no browser, no ComfyUI).
// ComfyUI also loads this file as an extension module; it only exports functions and has no side effects.

/** Z-Image works in 16 px units (VAE factor 8 x patch 2). */
export const SIZE_MULTIPLE = 16;

/** Label of the aspect-preset entry that leaves width/height alone. */
export const CUSTOM = "custom";

/** Label of the style entry that removes the style suffix. */
export const STYLE_NONE = "none";

// Aspect-ratio presets: 9 ratios x 2 size classes = 18. Each w*h is within 1% of class^2 and both sides are
// multiples of 16; ratios are exact where 16 px units allow it (4:3 and 16:9 at 1K are within 1%).
//
// | ratio | 1K class (~1024^2)  | w*h / 1024^2 | 2K class (~2048^2)  | w*h / 2048^2 |
// |-------|---------------------|--------------|---------------------|--------------|
// | 1:1   | 1024 x 1024         | 1.000        | 2048 x 2048         | 1.000        |
// | 4:3   | 1184 x  880 (1.345) | 0.994        | 2368 x 1776         | 1.003        |
// | 3:4   |  880 x 1184         | 0.994        | 1776 x 2368         | 1.003        |
// | 3:2   | 1248 x  832         | 0.990        | 2496 x 1664         | 0.990        |
// | 2:3   |  832 x 1248         | 0.990        | 1664 x 2496         | 0.990        |
// | 16:9  | 1360 x  768 (1.771) | 0.996        | 2736 x 1536 (1.781) | 1.002        |
// | 9:16  |  768 x 1360         | 0.996        | 1536 x 2736         | 1.002        |
// | 21:9  | 1568 x  672         | 1.005        | 3136 x 1344         | 1.005        |
// | 9:21  |  672 x 1568         | 1.005        | 1344 x 3136         | 1.005        |
export const ASPECT_PRESETS = Object.freeze([
    { cls: 1024, ratio: "1:1", width: 1024, height: 1024 },
    { cls: 1024, ratio: "4:3", width: 1184, height: 880 },
    { cls: 1024, ratio: "3:4", width: 880, height: 1184 },
    { cls: 1024, ratio: "3:2", width: 1248, height: 832 },
    { cls: 1024, ratio: "2:3", width: 832, height: 1248 },
    { cls: 1024, ratio: "16:9", width: 1360, height: 768 },
    { cls: 1024, ratio: "9:16", width: 768, height: 1360 },
    { cls: 1024, ratio: "21:9", width: 1568, height: 672 },
    { cls: 1024, ratio: "9:21", width: 672, height: 1568 },
    { cls: 2048, ratio: "1:1", width: 2048, height: 2048 },
    { cls: 2048, ratio: "4:3", width: 2368, height: 1776 },
    { cls: 2048, ratio: "3:4", width: 1776, height: 2368 },
    { cls: 2048, ratio: "3:2", width: 2496, height: 1664 },
    { cls: 2048, ratio: "2:3", width: 1664, height: 2496 },
    { cls: 2048, ratio: "16:9", width: 2736, height: 1536 },
    { cls: 2048, ratio: "9:16", width: 1536, height: 2736 },
    { cls: 2048, ratio: "21:9", width: 3136, height: 1344 },
    { cls: 2048, ratio: "9:21", width: 1344, height: 3136 },
].map((p) => Object.freeze({ ...p, label: `${p.cls === 1024 ? "1K" : "2K"} ${p.ratio} (${p.width}x${p.height})` })));

/** Combo values for the "aspect preset" widget: "custom" first, then the 18 presets. */
export function presetLabels() {
    return [CUSTOM, ...ASPECT_PRESETS.map((p) => p.label)];
}

/** The preset with this label, or null (e.g. for "custom" or an unknown label). */
export function presetByLabel(label) {
    return ASPECT_PRESETS.find((p) => p.label === label) ?? null;
}

/** Label of the preset whose size is exactly width x height, else "custom". */
export function matchPreset(width, height) {
    const p = ASPECT_PRESETS.find((q) => q.width === Number(width) && q.height === Number(height));
    return p ? p.label : CUSTOM;
}

/**
 * Round a size to the nearest multiple of 16 (ties go up), clamped into [min, max] shrunk to multiples of 16.
 * Non-finite input falls back to the lower bound.
 */
export function snapSize(value, min = SIZE_MULTIPLE, max = 16384, multiple = SIZE_MULTIPLE) {
    const lo = Math.max(multiple, Math.ceil(Number(min) / multiple) * multiple);
    const hi = Math.max(lo, Math.floor(Number(max) / multiple) * multiple);
    const v = Number(value);
    if (!Number.isFinite(v)) return lo;
    const snapped = Math.round(v / multiple) * multiple;
    return Math.min(hi, Math.max(lo, snapped));
}

// Style presets: the suffix appended to the prompt (after ", "). Fixed strings, so the current style can be
// detected from the text alone (nothing needs saving besides the prompt itself).
export const STYLE_PRESETS = Object.freeze({
    [STYLE_NONE]: "",
    photorealistic: "photorealistic, high-resolution photograph, natural lighting, sharp focus, fine detail",
    cinematic: "cinematic film still, dramatic lighting, shallow depth of field, anamorphic lens, color graded",
    anime: "anime style, cel shading, clean line art, vibrant colors",
    "digital art": "digital art, detailed concept art illustration, vivid colors",
    "oil painting": "oil painting, visible brush strokes, rich impasto texture, classical fine art",
    watercolor: "watercolor painting, soft washes, bleeding pigments, textured paper",
    "3D render": "3D render, physically based materials, global illumination, octane render",
    fantasy: "fantasy art, epic magical atmosphere, ethereal glow, intricate details",
    "sci-fi": "science fiction, futuristic technology, neon lights, sleek high-tech design",
});

export const STYLE_SEPARATOR = ", ";

/** Combo values for the "style" widget. */
export function styleNames() {
    return Object.keys(STYLE_PRESETS);
}

// Longest suffix first, so a suffix that ends another suffix can never be matched by mistake.
const SUFFIXES = Object.entries(STYLE_PRESETS)
    .filter(([, s]) => s)
    .sort((a, b) => b[1].length - a[1].length);

function findSuffix(text) {
    const t = String(text ?? "").trimEnd();
    for (const [name, suffix] of SUFFIXES) {
        if (t === suffix) return { name, base: "" };
        if (t.endsWith(STYLE_SEPARATOR + suffix)) {
            return { name, base: t.slice(0, t.length - suffix.length - STYLE_SEPARATOR.length) };
        }
    }
    return null;
}

/** Name of the style whose suffix ends the prompt, else "none". */
export function detectStyle(text) {
    return findSuffix(text)?.name ?? STYLE_NONE;
}

/** The prompt without its style suffix (unchanged when it has none). */
export function stripStyle(text) {
    const found = findSuffix(text);
    return found ? found.base : String(text ?? "");
}

/** The prompt without trailing whitespace and commas (so "a cat, " + style does not give "a cat,, ..."). */
export function trimSeparators(text) {
    return String(text ?? "").replace(/[\s,]+$/, "");
}

/**
 * The prompt with `style`'s suffix: replaces a previous style suffix, "none" (or an unknown style) removes it.
 * Idempotent: applyStyle(applyStyle(t, s), s) === applyStyle(t, s).
 */
export function applyStyle(text, style) {
    const base = stripStyle(text);
    const suffix = STYLE_PRESETS[style];
    if (!suffix) return base;
    const head = trimSeparators(base);
    return head ? head + STYLE_SEPARATOR + suffix : suffix;
}

// Block classes drawn by the ZImageBlockClassifier preview; the Python side uses the same RGB colours.
export const BLOCK_CLASS_COLORS = Object.freeze([
    Object.freeze({ name: "subject", rgb: [230, 57, 70] }),
    Object.freeze({ name: "flat", rgb: [69, 123, 157] }),
    Object.freeze({ name: "detail", rgb: [244, 162, 97] }),
]);

/** CSS colour string for an [r, g, b] triple. */
export function rgbCss([r, g, b]) {
    return `rgb(${r}, ${g}, ${b})`;
}
