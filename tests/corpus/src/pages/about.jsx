import { useRoute } from "preact-iso";

export default function About() {
  const { params } = useRoute();
  const bytes = new TextEncoder().encode(params.name);
  return (
    <section>
      <h2>About {decodeURIComponent(params.name)}</h2>
      <a href="/">{bytes.length} bytes</a>
    </section>
  );
}
