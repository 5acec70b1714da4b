// Decide the layout before the first paint so the wall display never flashes the desk layout.
(function () {
  var q = new URLSearchParams(location.search);
  if (q.get('mode') === 'wall' || location.hash === '#wall' || (q.has('wall') && q.get('wall') !== '0' && q.get('wall') !== 'false')) document.documentElement.classList.add('wall');
})();
