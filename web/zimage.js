// Z-Image Turbo front-end extension (plain ES module, no build step, no dependencies).
//
// - ZImageSampler: width/height snap to multiples of 16; an "aspect preset" combo (18 presets, 1K and 2K classes).
// - ZImageEncode: a "style preset" combo that appends / replaces / removes a style suffix in the `text` widget.
// - ZImageBlockClassifier: a colour legend (subject / flat / detail) under the block preview.
//
// Serialization: every widget added here is front-end only. `widget.serialize = false` keeps it out of the saved
// workflow's widgets_values and `options.serialize = false` keeps it out of the API prompt, so saved workflows and
// API exports contain exactly the Python node's inputs. The widgets are appended after all of the node's own
// widgets: LiteGraph writes widgets_values by widget index but reads them back skipping non-serialized widgets, so
// a non-serialized widget in the middle would shift the values. Their displayed value is derived from the real
// widgets (size -> matching preset, prompt -> its style suffix) whenever a workflow is loaded or a value changes.
import { app } from "../../scripts/app.js";
import {
    BLOCK_CLASS_COLORS,
    CUSTOM,
    applyStyle,
    detectStyle,
    matchPreset,
    presetByLabel,
    presetLabels,
    rgbCss,
    snapSize,
    styleNames,
} from "./zimage_presets.js";

const EXT_NAME = "zimage.turbo.ui";
export const ASPECT_WIDGET = "aspect preset";
export const STYLE_WIDGET = "style preset";
export const LEGEND_WIDGET = "block legend";

function findWidget(node, name) {
    return node.widgets?.find((w) => w.name === name);
}

function frontendOnly(widget) {
    widget.serialize = false; // not in workflow widgets_values
    widget.options = widget.options ?? {};
    widget.options.serialize = false; // not in the API prompt
    return widget;
}

function chain(proto, method, fn) {
    const original = proto[method];
    proto[method] = function (...args) {
        const r = original?.apply(this, args);
        fn.apply(this, args);
        return r;
    };
}

function redraw(node) {
    node.setDirtyCanvas?.(true, true);
    app.graph?.setDirtyCanvas?.(true, true);
}

// ---------------------------------------------------------------------------------------------------------------
// ZImageSampler: snapping + aspect presets

function setupSampler(node) {
    const wW = findWidget(node, "width");
    const hW = findWidget(node, "height");
    if (!wW || !hW) return;

    const snap = (w) => snapSize(w.value, w.options?.min ?? 16, w.options?.max ?? 16384);
    let updating = false;
    let preset;
    const syncPreset = () => {
        if (preset) preset.value = matchPreset(wW.value, hW.value);
    };

    for (const w of [wW, hW]) {
        const original = w.callback;
        w.callback = function (value, ...rest) {
            const snapped = snap(w);
            if (w.value !== snapped) w.value = snapped;
            const r = original?.call(this, w.value, ...rest);
            if (!updating) syncPreset();
            redraw(node);
            return r;
        };
    }

    preset = frontendOnly(
        node.addWidget("combo", ASPECT_WIDGET, CUSTOM, (label) => {
            const p = presetByLabel(label);
            if (!p) return; // "custom": leave width/height alone
            updating = true;
            try {
                for (const [w, v] of [[wW, p.width], [hW, p.height]]) {
                    w.value = snapSize(v, w.options?.min ?? 16, w.options?.max ?? 16384);
                    w.callback?.(w.value);
                }
            } finally {
                updating = false;
            }
            syncPreset(); // shows "custom" if a widget's max clamped the preset
            redraw(node);
        }, { values: presetLabels(), serialize: false }),
    );
    preset.tooltip = "Front-end helper (not saved): sets width/height to an aspect ratio at about 1024^2 (1K) or "
        + "2048^2 (2K) pixels, both multiples of 16. 'custom' leaves them alone.";
    node.zimageSyncPreset = syncPreset;
    syncPreset();
}

// ---------------------------------------------------------------------------------------------------------------
// ZImageEncode: style suffix

function setupEncoder(node) {
    const textW = findWidget(node, "text");
    if (!textW) return;
    let style;
    const syncStyle = () => {
        if (style) style.value = detectStyle(textW.value);
    };

    const original = textW.callback;
    textW.callback = function (...args) {
        const r = original?.apply(this, args);
        syncStyle();
        return r;
    };

    style = frontendOnly(
        node.addWidget("combo", STYLE_WIDGET, "none", (name) => {
            const next = applyStyle(textW.value ?? "", name);
            if (next !== textW.value) {
                textW.value = next;
                original?.call(textW, next);
            }
            redraw(node);
        }, { values: styleNames(), serialize: false }),
    );
    style.tooltip = "Front-end helper (not saved): appends a style suffix to the prompt; choosing another style "
        + "replaces it, 'none' removes it. The prompt text itself is what gets saved and sent.";
    node.zimageSyncStyle = syncStyle;
    syncStyle();
}

// ---------------------------------------------------------------------------------------------------------------
// ZImageBlockClassifier: legend under the preview

const LEGEND_HEIGHT = 24;

function drawLegend(ctx, width, y) {
    ctx.save();
    ctx.font = "12px Arial, sans-serif";
    ctx.textBaseline = "middle";
    const cy = y + LEGEND_HEIGHT / 2;
    const sw = 12;
    const gap = 14;
    const items = BLOCK_CLASS_COLORS.map((c) => ({ ...c, tw: ctx.measureText(c.name).width }));
    const total = items.reduce((s, c) => s + sw + 5 + c.tw, 0) + gap * (items.length - 1);
    let x = Math.max(8, (width - total) / 2);
    for (const c of items) {
        ctx.fillStyle = rgbCss(c.rgb);
        ctx.fillRect(x, cy - sw / 2, sw, sw);
        ctx.strokeStyle = "rgba(0, 0, 0, 0.6)";
        ctx.strokeRect(x + 0.5, cy - sw / 2 + 0.5, sw - 1, sw - 1);
        ctx.fillStyle = "#ddd";
        ctx.fillText(c.name, x + sw + 5, cy);
        x += sw + 5 + c.tw + gap;
    }
    ctx.restore();
}

function setupClassifier(node) {
    if (findWidget(node, LEGEND_WIDGET)) return;
    const legend = frontendOnly(node.addCustomWidget({
        type: "zimage_legend",
        name: LEGEND_WIDGET,
        value: "",
        options: { serialize: false },
        computeSize(width) {
            return [width ?? 200, LEGEND_HEIGHT];
        },
        draw(ctx, _node, width, y) {
            drawLegend(ctx, width, y);
        },
        serializeValue() {
            return undefined;
        },
    }));
    legend.serialize = false;
}

// The preview widget ComfyUI adds after execution is appended after our legend; move the legend back to the end
// so it sits under the preview. Both are non-serialized trailing widgets, so the move cannot shift saved values.
function keepLegendLast(node) {
    const ws = node.widgets;
    if (!ws?.length) return;
    const i = ws.findIndex((w) => w.name === LEGEND_WIDGET);
    if (i < 0 || i === ws.length - 1) return;
    const [legend] = ws.splice(i, 1);
    ws.push(legend);
    redraw(node);
}

// ---------------------------------------------------------------------------------------------------------------

app.registerExtension({
    name: EXT_NAME,
    async beforeRegisterNodeDef(nodeType, nodeData) {
        const proto = nodeType.prototype;
        switch (nodeData?.name) {
            case "ZImageSampler":
                chain(proto, "onNodeCreated", function () { setupSampler(this); });
                chain(proto, "onConfigure", function () { this.zimageSyncPreset?.(); });
                break;
            case "ZImageEncode":
                chain(proto, "onNodeCreated", function () { setupEncoder(this); });
                chain(proto, "onConfigure", function () { this.zimageSyncStyle?.(); });
                break;
            case "ZImageBlockClassifier":
                chain(proto, "onNodeCreated", function () { setupClassifier(this); });
                chain(proto, "onDrawForeground", function () { keepLegendLast(this); });
                break;
            default:
                break;
        }
    },
});
