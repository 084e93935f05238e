/** Star rating, from 0 to 5 in steps of a tenth. */
function Star({ fill }) {
  return <span class={`star star--${fill}`} aria-hidden="true">★</span>;
}

export function Rating({ value }) {
  const stars = [1, 2, 3, 4, 5].map((n) => {
    if (value >= n) return 'full';
    return value >= n - 0.5 ? 'half' : 'empty';
  });
  return (
    <span class="rating" title={`${value.toFixed(1)} out of 5`}>
      {stars.map((fill, i) => <Star key={i} fill={fill} />)}
      <span class="rating__value">{value.toFixed(1)}</span>
    </span>
  );
}
