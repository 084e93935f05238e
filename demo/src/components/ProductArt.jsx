/**
 * Product picture drawn as inline SVG, so the shop loads no images. The colour
 * comes from the product's hue and the shape from its category.
 */
const SHAPES = {
  Kitchen: <circle cx="60" cy="48" r="24" />,
  Desk: <rect x="30" y="28" width="60" height="40" rx="4" />,
  Outdoor: <path d="M20 74 L52 24 L70 52 L80 40 L100 74 Z" />,
  Textiles: <path d="M28 30 h64 v44 h-64 Z M28 44 h64 M28 58 h64" />,
  Lighting: <path d="M60 18 L84 58 H36 Z M54 58 h12 v16 h-12 Z" />,
  Audio: <path d="M36 30 h48 v44 h-48 Z M60 44 m-10 0 a10 10 0 1 0 20 0 a10 10 0 1 0 -20 0" />,
};

export function ProductArt({ product, size = 'card' }) {
  const background = `hsl(${product.hue} 45% 88%)`;
  const ink = `hsl(${product.hue} 40% 38%)`;
  return (
    <svg
      class={`product-art product-art--${size}`}
      viewBox="0 0 120 90"
      role="img"
      aria-label={product.name}
    >
      <rect width="120" height="90" fill={background} />
      <g fill="none" stroke={ink} stroke-width="3" stroke-linejoin="round">
        {SHAPES[product.category]}
      </g>
    </svg>
  );
}
